//! The kubernetes state backend against a real kube-apiserver: the state in
//! Secrets, the run lock in a Lease, shared by two workdirs as two people
//! on two machines would share them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::cli::{code, hook, stderr, stdout, wait_for, Scratch};
use crate::support::controlplane::{self, ControlPlane};
use nautes_install::state::kubernetes::{KubeBackend, KubeStateConfig};
use nautes_install::state::{State, StateBackend, StateStore};

const NS: &str = "team";
const NAME: &str = "nautes-install-test";

/// The control plane with the namespace and the installer's kubeconfig in
/// a directory both workdirs can name.
fn cluster() -> Option<(ControlPlane, tempfile::TempDir, PathBuf)> {
    if controlplane::skip_unless_available() {
        return None;
    }
    let api = ControlPlane::start();
    let (status, body) = api.request(
        "POST",
        "/api/v1/namespaces",
        "application/json",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
    );
    assert_eq!(status, 201, "{body}");
    let shared = tempfile::tempdir().unwrap();
    let kubeconfig = shared.path().join("state.kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o600)).unwrap();
    Some((api, shared, kubeconfig))
}

fn state_section(kubeconfig: &Path, backend: &str) -> String {
    format!(
        "state:\n  backend: {backend}\n  kubernetes: {{ kubeconfig: {}, namespace: {NS}, leaseDuration: 3s }}\n",
        kubeconfig.display()
    )
}

/// A hook appending its name to a log both workdirs share.
fn logging(name: &str, log: &Path, after: &[&str]) -> String {
    hook(name, &format!("echo {name} >> {}", log.display()), after, None)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The state as the head Secret holds it (one chunk).
fn secret_state(api: &ControlPlane) -> Vec<u8> {
    let s = api.get(&format!("/api/v1/namespaces/{NS}/secrets/{NAME}"));
    let b64 = s["data"]["state.json"]
        .as_str()
        .unwrap_or_else(|| panic!("no state Secret: {s}"));
    base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
}

fn config(kubeconfig: &Path) -> KubeStateConfig {
    KubeStateConfig {
        kubeconfig: kubeconfig.to_path_buf(),
        context: None,
        namespace: NS.into(),
        name: NAME.into(),
        lease_seconds: 3,
    }
}

async fn backend(kubeconfig: &Path) -> KubeBackend {
    let c = config(kubeconfig);
    KubeBackend::new(&c.client().await.unwrap(), &c)
}

#[test]
fn two_applies_sharing_one_state_one_runs_and_the_other_is_refused_naming_the_holder() {
    let Some((_api, shared, kubeconfig)) = cluster() else {
        return;
    };
    let log = shared.path().join("log");
    let release = shared.path().join("release");
    let holding = shared.path().join("holding");
    let body = format!(
        "{}hooks:\n{}{}",
        state_section(&kubeconfig, "kubernetes"),
        hook(
            "hold",
            &format!(
                "echo hold >> {}; touch {}; while [ ! -e {} ]; do sleep 0.05; done",
                log.display(),
                holding.display(),
                release.display()
            ),
            &[],
            None
        ),
        logging("after", &log, &["hold"]),
    );
    let (a, b) = (Scratch::new(), Scratch::new());
    a.write_inventory(&body);
    b.write_inventory(&body);
    let first = a.spawn("apply", &[]);
    wait_for("the first apply to hold", Duration::from_secs(30), || holding.exists());
    let second = b.run("apply", &[]);
    assert_eq!(code(&second), 4, "{}", stderr(&second));
    let err = stderr(&second);
    assert!(err.contains(&format!("pid {}", first.id())), "names the holder: {err}");
    assert!(err.contains("until 20"), "says when the lock expires: {err}");
    assert!(err.contains("force-unlock"), "{err}");
    // `status` shows who holds the Lease, since when and until when.
    let status = a.command(&["status"]).output().unwrap();
    assert_eq!(code(&status), 0, "{}", stderr(&status));
    let said = stdout(&status);
    let line = said
        .lines()
        .find(|l| l.starts_with("State lock (Lease "))
        .unwrap_or_default();
    assert!(
        line.contains("held by ") && line.contains(&format!("pid {}", first.id())),
        "{said}"
    );
    assert!(
        line.contains("acquired 20") && line.contains("renewed 20") && line.contains("expires 20"),
        "{line}"
    );
    let json = a.command(&["--output", "json", "status"]).output().unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(
        doc["lease"]["holder"]
            .as_str()
            .unwrap_or_default()
            .ends_with(&format!("pid {}", first.id())),
        "{doc}"
    );
    assert_eq!(doc["lease"]["expired"], false, "{doc}");
    std::fs::write(&release, "").unwrap();
    let out = first.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = a.command(&["status"]).output().unwrap();
    assert!(stdout(&status).contains(": nobody holds it"), "{}", stdout(&status));
    // The second workdir has no state file of its own: it sees the shared one.
    let again = b.run("apply", &[]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert_eq!(lines(&log), ["hold", "after"], "nothing redone from the other workdir");
    assert!(!b.workdir().join("state.json").exists());
}

#[test]
fn a_killed_holder_s_lease_expires_and_the_next_run_resumes_from_the_shared_state() {
    let Some((_api, shared, kubeconfig)) = cluster() else {
        return;
    };
    let log = shared.path().join("log");
    let resume = shared.path().join("resume");
    let body = format!(
        "{}hooks:\n{}{}{}",
        state_section(&kubeconfig, "kubernetes"),
        logging("first", &log, &[]),
        hook(
            "slow",
            &format!(
                "echo slow >> {log}; if [ ! -e {resume} ]; then exec sleep 60; fi",
                log = log.display(),
                resume = resume.display()
            ),
            &["first"],
            None
        ),
        logging("last", &log, &["slow"]),
    );
    let (a, b) = (Scratch::new(), Scratch::new());
    a.write_inventory(&body);
    b.write_inventory(&body);
    let mut run = a.watch(&["apply", "-i", "inventory.yaml", "--concurrency", "1"]);
    run.wait_until("the slow step to start", Duration::from_secs(30), |w| {
        w.started("hook/slow")
    });
    // The start is written before the event, but give the hook its moment.
    wait_for("the slow hook to run", Duration::from_secs(10), || {
        lines(&log).contains(&"slow".to_string())
    });
    run.kill_group();
    let killed_at = Instant::now();
    let refused = b.run("apply", &[]);
    assert_eq!(code(&refused), 4, "the lease outlives its holder: {}", stderr(&refused));
    // Until a run takes it over, `status` says the holder is gone.
    wait_for("status to call the lease expired", Duration::from_secs(15), || {
        let out = a.command(&["status"]).output().unwrap();
        stdout(&out).contains("EXPIRED at 20")
    });
    std::fs::write(&resume, "").unwrap();
    let mut took_over = None;
    while killed_at.elapsed() < Duration::from_secs(20) {
        let out = b.run("apply", &[]);
        if code(&out) != 4 {
            took_over = Some(out);
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let out = took_over.expect("the lease expired within 20 s");
    eprintln!("lease taken over {:?} after the kill", killed_at.elapsed());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("ended without releasing the state lock"),
        "{}",
        stderr(&out)
    );
    assert_eq!(lines(&log), ["first", "slow", "slow", "last"], "first not redone");
}

#[test]
fn a_two_megabyte_state_round_trips_in_chunks_and_old_chunks_are_removed() {
    let Some((api, _shared, kubeconfig)) = cluster() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut state = State::default();
        // Incompressible-looking text, as certificates and logs in outputs are.
        let big: String = (0..2_000_000u64)
            .map(|i| char::from(b'a' + ((i * 7919 + i / 13) % 26) as u8))
            .collect();
        state.intents.insert("big".into(), Default::default());
        state.planned = vec![big];
        let bytes = serde_json::to_vec_pretty(&state).unwrap();
        let writer = backend(&kubeconfig).await;
        writer.write(bytes.clone()).await.unwrap();
        let secrets = |api: &ControlPlane| -> Vec<String> {
            api.get(&format!(
                "/api/v1/namespaces/{NS}/secrets?labelSelector=install.nautes.io/state={NAME}"
            ))["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["metadata"]["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(secrets(&api).len(), 3, "2 MB in 900 KiB chunks: {:?}", secrets(&api));
        let read = backend(&kubeconfig).await.load().await.unwrap();
        assert_eq!(serde_json::to_vec_pretty(&read).unwrap(), bytes);
        // A smaller state commits a new generation and the old chunks go.
        state.planned = vec!["small".into()];
        writer.write(serde_json::to_vec_pretty(&state).unwrap()).await.unwrap();
        assert_eq!(secrets(&api), [NAME.to_string()]);
        assert_eq!(backend(&kubeconfig).await.load().await.unwrap().planned, ["small"]);

        // Figures, not asserted: one state write of a small state, local vs here.
        let dir = tempfile::tempdir().unwrap();
        let local = StateStore::new(dir.path().join("state.json"), State::default());
        let remote = StateStore::with_backend(std::sync::Arc::new(backend(&kubeconfig).await), State::default());
        for (what, store) in [("local", &local), ("kubernetes", &remote)] {
            let start = Instant::now();
            for _ in 0..50 {
                store.update(|s| s.next_revision()).await.unwrap();
            }
            eprintln!("state write latency, {what}: {:?} per write", start.elapsed() / 50);
        }
    });
}

#[test]
fn a_conflicting_change_is_re_applied_when_it_left_the_state_alone_and_refused_naming_its_writer_otherwise() {
    let Some((api, _shared, kubeconfig)) = cluster() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ours = backend(&kubeconfig).await;
        let mut state = State {
            revision: 1,
            ..Default::default()
        };
        ours.write(serde_json::to_vec_pretty(&state).unwrap()).await.unwrap();
        let path = format!("/api/v1/namespaces/{NS}/secrets/{NAME}?fieldManager=the-test");
        // Someone labels the Secret between our read and our next write.
        let (status, body) = api.request(
            "PATCH",
            &path,
            "application/merge-patch+json",
            &json!({"metadata": {"annotations": {"team/owner": "ops"}}}),
        );
        assert_eq!(status, 200, "{body}");
        state.revision = 2;
        ours.write(serde_json::to_vec_pretty(&state).unwrap()).await.unwrap();
        let head = api.get(&format!("/api/v1/namespaces/{NS}/secrets/{NAME}"));
        assert_eq!(head["metadata"]["annotations"]["team/owner"], "ops", "their change kept");
        assert_eq!(backend(&kubeconfig).await.load().await.unwrap().revision, 2, "ours re-applied");

        // Someone rewrites the state itself: ours would erase it, so it is refused.
        let theirs = base64::engine::general_purpose::STANDARD.encode(br#"{"version":1,"revision":99,"steps":{}}"#);
        let (status, body) = api.request(
            "PATCH",
            &path,
            "application/merge-patch+json",
            &json!({"data": {"state.json": theirs}, "metadata": {"annotations": {"install.nautes.io/state-sha256": "theirs"}}}),
        );
        assert_eq!(status, 200, "{body}");
        state.revision = 3;
        let err = ours
            .write(serde_json::to_vec_pretty(&state).unwrap())
            .await
            .expect_err("a changed state is not overwritten")
            .to_string();
        assert!(err.contains("`the-test`"), "names who changed it: {err}");
        assert!(err.contains(&format!("Secret {NS}/{NAME}")), "{err}");
        let head = api.get(&format!("/api/v1/namespaces/{NS}/secrets/{NAME}"));
        assert_eq!(head["data"]["state.json"], Value::String(theirs), "theirs left in place");
    });
}

#[test]
fn migrate_state_there_and_back_and_force_unlock_keep_the_state_byte_for_byte() {
    let Some((api, shared, kubeconfig)) = cluster() else {
        return;
    };
    let log = shared.path().join("log");
    let hooks = format!("hooks:\n{}{}", logging("a", &log, &[]), logging("b", &log, &["a"]));
    let s = Scratch::new();
    s.write_inventory(&hooks);
    assert_eq!(code(&s.run("apply", &[])), 0);
    let local = std::fs::read(s.workdir().join("state.json")).unwrap();

    s.write_inventory(&format!("{}{hooks}", state_section(&kubeconfig, "kubernetes")));
    let out = s.run("migrate-state", &["--to", "kubernetes"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(secret_state(&api), local, "moved byte for byte");
    assert!(!s.workdir().join("state.json").exists(), "one place holds the truth");
    assert_eq!(code(&s.run("apply", &[])), 0);
    assert_eq!(lines(&log), ["a", "b"], "nothing redone after the move");

    // A lock left by a run on a machine that is gone for good.
    let ghost = "ghost@elsewhere pid 77";
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {"holderIdentity": ghost, "leaseDurationSeconds": 3600,
                 "acquireTime": chrono_now(), "renewTime": chrono_now()}});
    let current = api.get(&format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{NAME}"));
    let mut replace = lease.clone();
    replace["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
    let (status, body) = api.request(
        "PUT",
        &format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{NAME}"),
        "application/json",
        &replace,
    );
    assert_eq!(status, 200, "{body}");
    let refused = s.run("apply", &[]);
    assert_eq!(code(&refused), 4);
    assert!(stderr(&refused).contains(ghost), "{}", stderr(&refused));
    let wrong = s
        .command(&["force-unlock", "someone else", "-i", "inventory.yaml"])
        .output()
        .unwrap();
    assert_eq!(code(&wrong), 2, "{}", stderr(&wrong));
    // Without -i: the workdir remembers its backend.
    let out = s.command(&["force-unlock", ghost]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(code(&s.run("apply", &[])), 0);
    assert_eq!(lines(&log), ["a", "b"]);

    let remote = secret_state(&api);
    let out = s.run("migrate-state", &["--to", "local"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        std::fs::read(s.workdir().join("state.json")).unwrap(),
        remote,
        "back byte for byte"
    );
    let left = api.get(&format!(
        "/api/v1/namespaces/{NS}/secrets?labelSelector=install.nautes.io/state={NAME}"
    ));
    assert_eq!(left["items"].as_array().unwrap().len(), 0, "{left}");
    s.write_inventory(&format!("{}{hooks}", state_section(&kubeconfig, "local")));
    assert_eq!(code(&s.run("apply", &[])), 0);
    assert_eq!(lines(&log), ["a", "b"]);
}

/// Now, as the API writes MicroTime.
fn chrono_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.000000Z"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_backup_taken_from_any_workdir_holds_the_shared_state_and_restores_it() {
    let Some((_api, shared, kubeconfig)) = cluster() else {
        return;
    };
    let log = shared.path().join("log");
    let body = format!(
        "{}hooks:\n{}",
        state_section(&kubeconfig, "kubernetes"),
        logging("only", &log, &[])
    );
    let (a, b, c) = (Scratch::new(), Scratch::new(), Scratch::new());
    for s in [&a, &b, &c] {
        s.write_inventory(&body);
    }
    assert_eq!(code(&a.run("apply", &[])), 0);
    // b never ran apply: its workdir has no state file, the cluster has it.
    let pass = shared.path().join("passphrase");
    std::fs::write(&pass, "a passphrase for the test\n").unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let archive = shared.path().join("backup.tar.gz");
    let out = b
        .command(&["backup", "-i", "inventory.yaml", "--out"])
        .arg(&archive)
        .arg("--passphrase-file")
        .arg(&pass)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = c
        .command(&["restore", "-i", "inventory.yaml", "--from"])
        .arg(&archive)
        .arg("--passphrase-file")
        .arg(&pass)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let restored: Value = serde_json::from_slice(&std::fs::read(c.workdir().join("state.json")).unwrap()).unwrap();
    assert_eq!(restored["steps"]["hook/only"]["status"], "done", "{restored}");
}
