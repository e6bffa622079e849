//! The SSH driver directly against real sshd test hosts: what each host
//! sees, uploads that skip identical content, errors that name host and
//! command, and timeouts.

use crate::support::hosts;

use std::sync::Arc;
use std::time::Duration;

use nautes_install::drivers::ssh::{HostKeyPolicy, SshError, SshOptions, SshPool};

fn pool(hosts: &hosts::TestHosts, dir: &std::path::Path, command_timeout: Duration) -> Arc<SshPool> {
    let kh = dir.join("known_hosts");
    std::fs::write(&kh, hosts.known_hosts()).unwrap();
    Arc::new(SshPool::new(SshOptions {
        known_hosts: kh,
        policy: HostKeyPolicy::Strict,
        control_dir: dir.join("ctl"),
        connect_timeout: Duration::from_secs(5),
        command_timeout,
        connect_attempts: 1,
    }))
}

#[tokio::test]
async fn each_host_sees_its_own_files_and_name_and_uploads_skip_identical_content() {
    if hosts::skip_unless_available() {
        return;
    }
    let hosts = hosts::TestHosts::start(2);
    let dir = tempfile::Builder::new().prefix("sd").tempdir_in("/tmp").unwrap();
    let pool = pool(&hosts, dir.path(), Duration::from_secs(30));
    let a = pool.connect(&hosts.ssh_target(0)).await.unwrap();
    let b = pool.connect(&hosts.ssh_target(1)).await.unwrap();
    let name = a.run("cat /proc/sys/kernel/hostname").await.unwrap();
    assert_eq!(String::from_utf8_lossy(&name.stdout).trim(), "node-1");

    let local = dir.path().join("payload");
    std::fs::write(&local, vec![42u8; 300_000]).unwrap();
    assert_eq!(a.upload(&local, "/opt/nautes/payload", 0o640).await.unwrap(), 300_000);
    assert_eq!(
        a.upload(&local, "/opt/nautes/payload", 0o640).await.unwrap(),
        0,
        "identical: nothing sent"
    );
    assert_eq!(
        std::fs::read(hosts.host_path(0, "/opt/nautes/payload")).unwrap().len(),
        300_000
    );
    assert!(
        !hosts.host_path(1, "/opt/nautes/payload").exists(),
        "node-2 has its own /opt/nautes"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&hosts.host_path(0, "/opt/nautes/payload")), 0o640);
    // Same content, other mode: fixed without sending.
    assert_eq!(a.upload(&local, "/opt/nautes/payload", 0o600).await.unwrap(), 0);
    assert_eq!(mode(&hosts.host_path(0, "/opt/nautes/payload")), 0o600);
    // Changed content is sent again; no temp files are left behind.
    assert_eq!(a.upload_bytes(b"v2", "/opt/nautes/payload", 0o600).await.unwrap(), 2);
    let leftovers: Vec<_> = std::fs::read_dir(hosts.host_path(0, "/opt/nautes"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("nautes-tmp"))
        .collect();
    assert!(leftovers.is_empty());
    assert_eq!(b.read("/proc/sys/kernel/hostname").await.unwrap(), b"node-2\n");

    // Many commands, one master connection per host.
    for _ in 0..10 {
        a.run("true").await.unwrap();
    }
    assert_eq!(hosts.accepted_connections(0), 1);
    pool.close_all().await;
}

#[tokio::test]
async fn failures_name_the_host_and_command_and_timeouts_fire() {
    if hosts::skip_unless_available() {
        return;
    }
    let mut hosts = hosts::TestHosts::start(2);
    let dir = tempfile::Builder::new().prefix("sd").tempdir_in("/tmp").unwrap();
    // The command timeout must leave a loaded CI machine room for a `cat`
    // over ssh (1 s did not, once) while staying well under the `sleep`.
    let pool = pool(&hosts, dir.path(), Duration::from_secs(4));
    let a = pool.connect(&hosts.ssh_target(0)).await.unwrap();
    let err = a.read("/opt/nautes/missing").await.unwrap_err().to_string();
    assert!(
        err.contains("node-1") && err.contains("cat '/opt/nautes/missing'") && err.contains("exit status 1"),
        "{err}"
    );
    match a.run("sleep 30").await {
        Err(SshError::Timeout { host, command, .. }) => {
            assert_eq!((host.as_str(), command.as_str()), ("node-1", "sleep 30"))
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    hosts.stop_host(1);
    let err = pool
        .connect(&hosts.ssh_target(1))
        .await
        .err()
        .expect("host is down")
        .to_string();
    assert!(
        err.contains("node-2") && err.contains(&format!("{}:{}", hosts.hosts[1].address, hosts::PORT)),
        "{err}"
    );
    assert!(err.contains("refused"), "says why: {err}");
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(cmdline);
        }
    }
    found
}

#[tokio::test]
async fn closing_the_pool_stops_our_masters_and_those_ansible_left_in_our_directory() {
    if hosts::skip_unless_available() {
        return;
    }
    let hosts = hosts::TestHosts::start(1);
    let dir = tempfile::Builder::new().prefix("sd").tempdir_in("/tmp").unwrap();
    let pool = pool(&hosts, dir.path(), Duration::from_secs(30));
    let a = pool.connect(&hosts.ssh_target(0)).await.unwrap();
    a.run("true").await.unwrap();
    // What Ansible does with ANSIBLE_SSH_CONTROL_PATH_DIR pointing at ours.
    let ansible = dir.path().join("ctl/ansible");
    std::fs::create_dir_all(&ansible).unwrap();
    let target = hosts.ssh_target(0);
    let status = std::process::Command::new("ssh")
        .arg("-o")
        .arg(format!("ControlPath={}/abc", ansible.display()))
        .args([
            "-o",
            "ControlMaster=auto",
            "-o",
            "ControlPersist=60s",
            "-o",
            "BatchMode=yes",
        ])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            dir.path().join("known_hosts").display()
        ))
        .arg("-i")
        .arg(target.identity_file.as_ref().unwrap())
        .args(["-p", &target.port.to_string(), "-l", "root", &target.address, "true"])
        .status()
        .unwrap();
    assert!(status.success());
    let ctl = dir.path().join("ctl").display().to_string();
    assert_eq!(processes_mentioning(&ctl).len(), 2, "{:?}", processes_mentioning(&ctl));
    drop(a);
    pool.close_all().await;
    // The masters exit on their own after `-O exit`; give a loaded machine time.
    let closed = std::time::Instant::now();
    while !processes_mentioning(&ctl).is_empty() && closed.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = processes_mentioning(&ctl);
    assert!(left.is_empty(), "masters left: {left:?}");
}
