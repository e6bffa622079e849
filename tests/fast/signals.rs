//! Ctrl-C, SIGTERM and connect timeouts against a host that never answers:
//! a real TCP listener on 127.0.0.1 that accepts and never sends an SSH
//! banner. Bounds are generous (the measured figures are far below); they
//! exist to catch waits that multiply or never end.

use crate::support::cli;
use crate::support::inventory::InventoryBuilder;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use cli::{code, processes_mentioning, signal, stderr, wait_exit, wait_for, Scratch};

/// Accepts connections and keeps them open without a word.
fn hanging_listener() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    port
}

/// A one-node K3s cluster whose node is `127.0.0.1:port`.
fn inventory(port: u16, connect: &str) -> InventoryBuilder {
    InventoryBuilder::new()
        .domain("nautes.example.com")
        .set("settings.timeouts.sshConnect", connect)
        .set("ssh.user", "root")
        .host(
            "node-1",
            "127.0.0.1",
            serde_json::json!({"port": port, "roles": ["server"]}),
        )
        .k3s_cluster("host", "v1.27.4+k3s1", &["node-1"])
}

fn stop_during_a_hanging_connect(sig: i32) {
    let port = hanging_listener();
    let s = Scratch::new();
    // A limit far beyond the test's bound: only the signal can end this.
    s.write(&inventory(port, "120s"));
    let mut child = s.spawn("apply", &["--only", "preflight/host"]);
    let pid = child.id();
    let ssh_dir = format!("nautes-ssh-{pid}");
    wait_for(
        "an ssh master connecting to the hanging host",
        Duration::from_secs(30),
        || !processes_mentioning(&ssh_dir, pid).is_empty(),
    );
    let sent = Instant::now();
    signal(pid, sig);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let took = sent.elapsed();
    let status = status.unwrap_or_else(|| panic!("still running 10s after signal {sig}"));
    eprintln!("signal {sig}: exited {took:?} after the signal");
    assert_eq!(status.code(), Some(130), "interrupted exit code");
    assert_eq!(
        s.step_status("preflight/host").as_deref(),
        Some("interrupted"),
        "the cancelled step is recorded as interrupted"
    );
    let state = s.state();
    assert_eq!(state["runs"][0]["result"], "interrupted");
    assert!(
        !std::env::temp_dir().join(&ssh_dir).exists(),
        "the control directory is gone"
    );
    let left = processes_mentioning(&ssh_dir, pid);
    assert!(left.is_empty(), "no ssh master left behind: {left:?}");
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(err.contains("apply preflight/host interrupted"), "{err}");
    assert!(err.contains("1 interrupted"), "{err}");
}

#[test]
fn one_ctrl_c_during_a_hanging_ssh_connect_stops_the_run_within_seconds() {
    stop_during_a_hanging_connect(libc::SIGINT);
}

#[test]
fn one_sigterm_during_a_hanging_ssh_connect_stops_the_run_within_seconds() {
    stop_during_a_hanging_connect(libc::SIGTERM);
}

#[test]
fn check_interrupted_by_a_signal_leaves_no_ssh_master_or_directory() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let port = hanging_listener();
        let s = Scratch::new();
        s.write(&inventory(port, "120s"));
        let mut child = s.spawn("check", &[]);
        let pid = child.id();
        let ssh_dir = format!("nautes-ssh-{pid}");
        wait_for("an ssh master", Duration::from_secs(30), || {
            !processes_mentioning(&ssh_dir, pid).is_empty()
        });
        signal(pid, sig);
        let status = wait_exit(&mut child, Duration::from_secs(10)).expect("check stops on a signal");
        assert_eq!(status.code(), Some(130));
        assert!(!std::env::temp_dir().join(&ssh_dir).exists());
        let left = processes_mentioning(&ssh_dir, pid);
        assert!(left.is_empty(), "no ssh master left behind: {left:?}");
    }
}

#[test]
fn the_ssh_connect_timeout_is_the_whole_wait_retries_included() {
    let port = hanging_listener();
    let s = Scratch::new();
    s.write(&inventory(port, "2s"));
    let started = Instant::now();
    let out = s.run("apply", &["--only", "preflight/host"]);
    let took = started.elapsed();
    eprintln!("sshConnect 2s: the run took {took:?}");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("no SSH answer within 2s"), "{err}");
    // Three attempts of 2s each plus back-off took 7.6s; one budget of 2s
    // (plus process start-up) stays well under 5s.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(!err.contains("\\r\\n"), "{err}");
}
