//! K3s host clusters end to end: the real binary, real sshd test hosts
//! (own filesystems and hostnames), an air-gap bundle whose `k3s` and install
//! script are stand-ins, and a real control plane the nodes register in.

use crate::support::{archive, cli, controlplane, hosts};

use std::path::Path;
use std::time::{Duration, Instant};

use cli::{code, processes_mentioning, signal, stderr, stdout, wait_exit, wait_for, Scratch};
use controlplane::ControlPlane as KubeApiStandin;
use hosts::TestHosts;

const V1: &str = "v1.27.4+k3s1";
const V2: &str = "v1.28.2+k3s1";

struct Env {
    hosts: TestHosts,
    api: KubeApiStandin,
    s: Scratch,
}

fn make_bundle(dir: &Path, versions: &[&str]) {
    let standin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/k3s_standin");
    for (i, v) in versions.iter().enumerate() {
        let d = dir.join("k3s").join(v);
        std::fs::create_dir_all(&d).unwrap();
        let k3s = std::fs::read_to_string(standin.join("k3s"))
            .unwrap()
            .replace("@VERSION@", v);
        std::fs::write(d.join("k3s"), k3s).unwrap();
        std::fs::copy(standin.join("install.sh"), d.join("install.sh")).unwrap();
        // An images tarball stand-in: bytes that differ per version.
        let images: Vec<u8> = (0..262_144u32)
            .map(|n| (n.wrapping_mul(2654435761).wrapping_add(i as u32) >> 13) as u8)
            .collect();
        std::fs::write(d.join("k3s-airgap-images-amd64.tar.zst"), images).unwrap();
    }
    nautes_install::artifacts::write_checksums(dir).unwrap();
}

fn env(names: &[(&str, &str)]) -> Option<Env> {
    env_with(names, false)
}

fn env_with(names: &[(&str, &str)], own_ports: bool) -> Option<Env> {
    if hosts::skip_unless_available() || controlplane::skip_unless_available() {
        return None;
    }
    let named: Vec<(String, String)> = names.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    let hosts = if own_ports {
        TestHosts::start_named_owning_ports(&named)
    } else {
        TestHosts::start_named(&named)
    };
    let api = KubeApiStandin::start_with_nodes(&[]);
    for i in 0..hosts.hosts.len() {
        std::fs::write(hosts.host_path(i, "/etc/rancher/standin-api.env"), api.env_file()).unwrap();
    }
    let s = Scratch::new();
    let bundle = s.path().join("bundle");
    make_bundle(&bundle, &[V1, V2]);
    std::fs::write(s.path().join("known_hosts"), hosts.known_hosts()).unwrap();
    Some(Env { hosts, api, s })
}

fn nodes(n: usize) -> Vec<(&'static str, &'static str)> {
    ["node-1", "node-2", "node-3", "node-4", "node-5"]
        .iter()
        .take(n)
        .map(|x| (*x, *x))
        .collect()
}

impl Env {
    fn inventory(&self, clusters: &str) {
        self.s.write_inventory(&format!(
            "settings:\n  timeouts:\n    nodeReady: 30s\nssh:\n  identityFile: {}\n  knownHosts: known_hosts\nartifacts:\n  mode: airgap\n  bundle: bundle\n{}clusters:\n{clusters}",
            self.hosts.client_key().display(),
            self.hosts.inventory_hosts(),
        ));
    }

    fn cluster(&self, name: &str, version: &str, servers: &[&str], agents: &[&str]) -> String {
        self.cluster_at(name, version, servers, agents, &self.api.url())
    }

    fn cluster_at(&self, name: &str, version: &str, servers: &[&str], agents: &[&str], api: &str) -> String {
        format!(
            "  - name: {name}\n    type: k3s\n    k3s:\n      version: {version}\n      servers: [{}]\n      agents: [{}]\n      apiEndpoint: {}\n",
            servers.join(", "),
            agents.join(", "),
            api
        )
    }

    fn apply(&self, extra: &[&str]) -> std::process::Output {
        let mut args = vec!["--yes", "apply", "-i", "inventory.yaml"];
        args.extend_from_slice(extra);
        self.s.command(&args).output().unwrap()
    }

    fn host_file(&self, i: usize, path: &str) -> String {
        std::fs::read_to_string(self.hosts.host_path(i, path)).unwrap_or_default()
    }

    fn outputs(&self, step: &str) -> serde_json::Value {
        self.s.state()["steps"][step]["outputs"].clone()
    }
}

#[test]
fn single_server_install_then_rerun_changes_nothing_and_sends_nothing() {
    let Some(e) = env(&nodes(1)) else { return };
    e.inventory(&e.cluster("main", V1, &["node-1"], &[]));
    let out = e.apply(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // The host received the stand-in binary, its config and the token (0600).
    assert!(e.host_file(0, "/usr/local/bin/k3s").contains(V1));
    let config = e.host_file(0, "/etc/rancher/k3s/config.yaml");
    assert!(config.contains("node-name: node-1"), "{config}");
    assert!(
        !config.contains("cluster-init"),
        "a lone server keeps the default datastore: {config}"
    );
    let token_local = std::fs::read_to_string(e.s.workdir().join("outputs/main/k3s-token")).unwrap();
    assert_eq!(e.host_file(0, "/etc/rancher/k3s/nautes-token"), token_local);
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&e.hosts.host_path(0, "/etc/rancher/k3s/nautes-token")), 0o600);
    assert!(
        !e.s.read(".nautes/state.json").contains(token_local.trim()),
        "the token never enters the state"
    );

    // The kubeconfig points at the reachable endpoint, is private, and works.
    let kubeconfig_path = e.s.workdir().join("outputs/main/kubeconfig");
    let kubeconfig = std::fs::read_to_string(&kubeconfig_path).unwrap();
    assert!(kubeconfig.contains(&format!("server: {}", e.api.url())), "{kubeconfig}");
    assert!(kubeconfig.contains("current-context: main"));
    assert_eq!(mode(&kubeconfig_path), 0o600);
    assert_eq!(e.api.node_names(), ["node-1"]);
    // Preflight, node and kubeconfig steps all went through one SSH master connection.
    assert_eq!(
        e.hosts.accepted_connections(0),
        1,
        "one multiplexed connection per host per run"
    );
    assert!(e.outputs("k3s/main/server/node-1")["bytes_sent"].as_u64().unwrap() > 100_000);

    // A re-run plans nothing; forcing the node step shows it sends 0 bytes and restarts nothing.
    let again = e.apply(&[]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert!(stderr(&again).contains(": 0 done, "), "{}", stderr(&again));
    let forced = e.apply(&["--only", "k3s/main/server/node-1"]);
    assert_eq!(code(&forced), 0, "{}", stderr(&forced));
    let outputs = e.outputs("k3s/main/server/node-1");
    assert_eq!(outputs["bytes_sent"], 0, "{outputs}");
    assert_eq!(outputs["restarted"], false, "{outputs}");
    let installs = e.host_file(0, "/var/lib/rancher/k3s/standin-installs.log");
    assert_eq!(installs.lines().count(), 1, "install script ran once: {installs}");
}

/// sshd keeps a command without a terminal running when its channel closes:
/// a Ctrl-C that only dropped the channel would leave the install script
/// working on the host while the run reports it interrupted.
#[test]
fn ctrl_c_during_a_remote_install_stops_the_script_and_its_children_on_the_host() {
    let Some(e) = env(&nodes(1)) else { return };
    // The install script hangs in a child of its own; the odd duration names
    // this test's process on the machine.
    let marker = format!("3600.{}", std::process::id());
    let bundle = e.s.path().join("bundle");
    std::fs::write(
        bundle.join("k3s").join(V1).join("install.sh"),
        format!("#!/bin/sh\nsh -c 'sleep {marker}' &\nwait\n"),
    )
    .unwrap();
    nautes_install::artifacts::write_checksums(&bundle).unwrap();
    e.inventory(&e.cluster("main", V1, &["node-1"], &[]));
    let mut child = e.s.spawn("apply", &["--yes"]);
    let pid = child.id();
    wait_for(
        "the install script running on the host",
        Duration::from_secs(60),
        || !processes_mentioning(&format!("sleep {marker}"), pid).is_empty(),
    );
    let sent = Instant::now();
    signal(pid, libc::SIGINT);
    let status = wait_exit(&mut child, Duration::from_secs(20)).expect("apply stops on Ctrl-C");
    eprintln!(
        "Ctrl-C during a remote command: exited {:?} after the signal",
        sent.elapsed()
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(130), "{}", stderr(&out));
    assert_eq!(
        e.s.step_status("k3s/main/server/node-1").as_deref(),
        Some("interrupted")
    );
    let left = processes_mentioning(&format!("sleep {marker}"), pid);
    assert!(
        left.is_empty(),
        "the install script's child still runs on the host: {left:?}"
    );
    let records: Vec<String> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|f| f.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("nautes-run-{pid}-")))
        .collect();
    assert!(
        records.is_empty(),
        "the host keeps no record of stopped commands: {records:?}"
    );
}

#[test]
fn ha_servers_join_the_first_in_order_then_agents_with_the_same_token() {
    let Some(e) = env(&nodes(5)) else { return };
    e.inventory(&e.cluster("main", V1, &["node-1", "node-2", "node-3"], &["node-4", "node-5"]));
    let out = e.apply(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let token = std::fs::read_to_string(e.s.workdir().join("outputs/main/k3s-token")).unwrap();
    let first_ip = &e.hosts.hosts[0].address;
    let mut starts = Vec::new();
    for i in 0..5 {
        assert_eq!(
            e.host_file(i, "/etc/rancher/k3s/nautes-token"),
            token,
            "node-{} got the cluster token",
            i + 1
        );
        let config = e.host_file(i, "/etc/rancher/k3s/config.yaml");
        if i == 0 {
            assert!(config.contains("cluster-init: true"), "{config}");
            assert!(!config.contains("server:"), "{config}");
        } else {
            assert!(
                config.contains(&format!("server: https://{first_ip}:6443")),
                "node-{} joins the first server: {config}",
                i + 1
            );
            assert!(!config.contains("cluster-init"));
        }
        let role_ok = if i < 3 {
            config.contains("cluster-cidr")
        } else {
            !config.contains("cluster-cidr")
        };
        assert!(role_ok, "servers carry cluster flags, agents do not: {config}");
        let line = e.host_file(i, "/var/lib/rancher/k3s/standin-installs.log");
        let t: u128 = line.split_whitespace().next().unwrap().parse().unwrap();
        starts.push((t, i));
    }
    let order: Vec<usize> = {
        let mut s = starts.clone();
        s.sort();
        s.into_iter().map(|(_, i)| i).collect()
    };
    assert_eq!(
        order,
        vec![0, 1, 2, 3, 4],
        "first server, then servers one by one, then agents"
    );
    let mut names = e.api.node_names();
    names.sort();
    assert_eq!(names, ["node-1", "node-2", "node-3", "node-4", "node-5"]);
}

#[test]
fn preflight_reports_every_failing_host_and_touches_none() {
    // Two hosts share a hostname, and a program holds the API port.
    let Some(e) = env_with(&[("node-1", "twin"), ("node-2", "twin"), ("node-3", "node-3")], true) else {
        return;
    };
    let _busy = std::net::TcpListener::bind("127.0.0.1:6443").ok();
    e.inventory(&e.cluster("main", V1, &["node-1"], &["node-2", "node-3"]));
    // `check` shows the same table without touching anything.
    let check = e.s.run("check", &[]);
    assert_eq!(code(&check), 1);
    assert!(
        cli::stdout(&check).contains("node-1  hostname  FAIL"),
        "{}",
        cli::stdout(&check)
    );
    assert!(
        cli::stdout(&check).contains("node-3  hostname  ok"),
        "{}",
        cli::stdout(&check)
    );
    let out = e.apply(&[]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    for host in ["node-1", "node-2"] {
        assert!(
            err.contains(&format!("{host}  hostname  FAIL")),
            "hostname clash on {host}: {err}"
        );
    }
    assert!(!err.contains("node-3  hostname  FAIL"), "{err}");
    if _busy.is_some() {
        assert!(
            err.contains("node-1  ports     FAIL     in use by another program: 6443/tcp"),
            "{err}"
        );
        assert!(
            !err.contains("node-2  ports     FAIL"),
            "agents do not need 6443: {err}"
        );
    }
    for i in 0..3 {
        assert!(
            e.host_file(i, "/usr/local/bin/k3s").is_empty(),
            "no host is touched when preflight fails"
        );
    }
}

#[test]
fn a_changed_host_key_stops_with_both_fingerprints() {
    let Some(mut e) = env(&nodes(1)) else { return };
    let old_pub = std::fs::read_to_string(e.hosts.hosts[0].dir.join("host_key.pub")).unwrap();
    e.hosts.regenerate_host_key(0);
    e.inventory(&e.cluster("main", V1, &["node-1"], &[]));
    let out = e.apply(&[]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    let fp = |pubkey: &str| {
        nautes_install::drivers::ssh::hostkeys::fingerprint(pubkey.split_whitespace().nth(1).unwrap()).unwrap()
    };
    let new_pub = std::fs::read_to_string(e.hosts.hosts[0].dir.join("host_key.pub")).unwrap();
    assert!(err.contains("host key CHANGED"), "{err}");
    assert!(err.contains(&fp(&old_pub)), "shows the trusted fingerprint: {err}");
    assert!(err.contains(&fp(&new_pub)), "shows the offered fingerprint: {err}");
    // --accept-new-host-keys never overrides a changed key.
    let again =
        e.s.command(&["--yes", "--accept-new-host-keys", "apply", "-i", "inventory.yaml"])
            .output()
            .unwrap();
    assert_eq!(code(&again), 1);
    assert!(stderr(&again).contains("host key CHANGED"));
}

#[test]
fn an_unknown_host_key_needs_explicit_trust() {
    let Some(e) = env(&nodes(1)) else { return };
    std::fs::write(e.s.path().join("known_hosts"), "").unwrap();
    e.inventory(&e.cluster("main", V1, &["node-1"], &[]));
    let out = e.apply(&[]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("host key not trusted yet"), "{}", stderr(&out));
    let ok =
        e.s.command(&["--yes", "--accept-new-host-keys", "apply", "-i", "inventory.yaml"])
            .output()
            .unwrap();
    assert_eq!(code(&ok), 0, "{}", stderr(&ok));
    // ssh may hash the names it records (Debian's default); the driver reads both forms.
    let h = &e.hosts.hosts[0];
    let recorded =
        nautes_install::drivers::ssh::hostkeys::known_keys(&e.s.path().join("known_hosts"), &h.address, hosts::PORT);
    assert_eq!(recorded.len(), 1, "the key was recorded: {}", e.s.read("known_hosts"));
}

#[test]
fn a_down_host_fails_its_cluster_while_the_other_finishes_and_a_rerun_completes() {
    let Some(mut e) = env(&nodes(2)) else { return };
    // Each cluster has its own API.
    let beta_api = KubeApiStandin::start_with_nodes(&[]);
    std::fs::write(
        e.hosts.host_path(1, "/etc/rancher/standin-api.env"),
        beta_api.env_file(),
    )
    .unwrap();
    e.inventory(&format!(
        "{}{}",
        e.cluster("alpha", V1, &["node-1"], &[]),
        e.cluster_at("beta", V1, &["node-2"], &[], &beta_api.url())
    ));
    e.hosts.stop_host(1);
    let out = e.apply(&[]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(
        err.contains("node-2") && err.contains("cannot connect"),
        "names the host: {err}"
    );
    assert_eq!(
        e.s.step_status("k3s/alpha/kubeconfig").as_deref(),
        Some("done"),
        "the independent cluster finished"
    );
    e.hosts.start_host(1);
    let again = e.apply(&[]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    let a = e.s.state()["steps"]["k3s/alpha/server/node-1"]["attempts"].clone();
    assert_eq!(a, 1, "alpha was not redone");
    assert_eq!(e.api.node_names(), ["node-1"]);
    assert_eq!(beta_api.node_names(), ["node-2"]);
}

#[test]
fn upgrade_rolls_servers_one_by_one_then_agents_and_teardown_reverses() {
    let Some(e) = env(&nodes(4)) else { return };
    e.inventory(&e.cluster("main", V1, &["node-1", "node-2", "node-3"], &["node-4"]));
    assert_eq!(code(&e.apply(&[])), 0);
    let plan = e.s.command(&["plan", "-i", "inventory.yaml"]).output().unwrap();
    assert!(
        cli::stdout(&plan).contains("Plan: 0 to apply"),
        "{}",
        cli::stdout(&plan)
    );

    e.inventory(&e.cluster("main", V2, &["node-1", "node-2", "node-3"], &["node-4"]));
    let out = e.apply(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut second_installs = Vec::new();
    for i in 0..4 {
        let log = e.host_file(i, "/var/lib/rancher/k3s/standin-installs.log");
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 2, "node-{} installed twice: {log}", i + 1);
        second_installs.push((lines[1].split_whitespace().next().unwrap().parse::<u128>().unwrap(), i));
        assert!(e.host_file(i, "/usr/local/bin/k3s").contains(V2));
    }
    second_installs.sort();
    assert_eq!(
        second_installs.iter().map(|(_, i)| *i).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    let node = e.api.get("/api/v1/nodes/node-4");
    assert_eq!(node["status"]["nodeInfo"]["kubeletVersion"], V2);

    let out =
        e.s.command(&["--yes", "destroy", "-i", "inventory.yaml"])
            .output()
            .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut uninstalls = Vec::new();
    for i in 0..4 {
        let log = e.host_file(i, "/etc/systemd/system/standin-uninstall.log");
        let t: u128 = log
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("node-{} was not uninstalled", i + 1))
            .parse()
            .unwrap();
        uninstalls.push((t, i));
        assert!(e.host_file(i, "/usr/local/bin/k3s").is_empty(), "binary removed");
    }
    uninstalls.sort();
    assert_eq!(
        uninstalls.iter().map(|(_, i)| *i).collect::<Vec<_>>(),
        vec![3, 2, 1, 0],
        "agents first, then servers in reverse"
    );
    assert!(!e.s.workdir().join("outputs/main/kubeconfig").exists());
    assert_eq!(e.s.state()["steps"], serde_json::json!({}));
}

#[test]
fn removing_a_host_drains_and_deletes_just_that_node() {
    let Some(e) = env(&nodes(3)) else { return };
    e.inventory(&e.cluster("main", V1, &["node-1"], &["node-2", "node-3"]));
    assert_eq!(code(&e.apply(&[])), 0);
    e.inventory(&e.cluster("main", V1, &["node-1"], &["node-2"]));
    let out = e.apply(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut names = e.api.node_names();
    names.sort();
    assert_eq!(names, ["node-1", "node-2"], "node-3 was deleted from the cluster");
    assert!(
        e.host_file(2, "/usr/local/bin/k3s").is_empty(),
        "node-3 was uninstalled"
    );
    assert!(!e.host_file(1, "/usr/local/bin/k3s").is_empty(), "node-2 untouched");
    assert_eq!(
        e.host_file(1, "/var/lib/rancher/k3s/standin-installs.log")
            .lines()
            .count(),
        1
    );
}

#[test]
fn a_config_change_reruns_only_the_node_it_touches() {
    let Some(e) = env(&nodes(3)) else { return };
    e.inventory(&e.cluster("main", V1, &["node-1"], &["node-2", "node-3"]));
    assert_eq!(code(&e.apply(&[])), 0);
    // A label on node-2 changes only node-2's rendered config.
    let with_label = std::fs::read_to_string(e.s.inventory()).unwrap().replace(
        &format!("  - name: node-2\n    address: {}\n", e.hosts.hosts[1].address),
        &format!(
            "  - name: node-2\n    address: {}\n    labels: {{zone: b}}\n",
            e.hosts.hosts[1].address
        ),
    );
    std::fs::write(e.s.inventory(), with_label).unwrap();
    let plan = cli::stdout(&e.s.command(&["plan", "-i", "inventory.yaml"]).output().unwrap());
    assert!(plan.contains("~ k3s/main/agent/node-2"), "{plan}");
    assert!(plan.contains("= k3s/main/agent/node-3"), "{plan}");
    assert!(plan.contains("= k3s/main/server/node-1"), "{plan}");
    let out = e.apply(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(e.host_file(1, "/etc/rancher/k3s/config.yaml").contains("zone=b"));
    let installs = |i: usize| {
        e.host_file(i, "/var/lib/rancher/k3s/standin-installs.log")
            .lines()
            .count()
    };
    assert_eq!(
        (installs(0), installs(1), installs(2)),
        (1, 2, 1),
        "only node-2 was restarted"
    );
    assert_eq!(e.api.get("/api/v1/nodes/node-2")["metadata"]["labels"]["zone"], "b");
}

/// A login user that needs a password for sudo, on every test host (they
/// share /etc/passwd and /etc/sudoers.d with the machine).
fn sudo_user(password: &str) -> Option<&'static str> {
    let user = "nautes-sudo";
    if !Path::new("/usr/bin/sudo").exists() {
        if std::env::var_os("CI").is_some() {
            panic!("sudo is missing (.ci/install.d/20-openssh.sh installs it)");
        }
        eprintln!("SKIPPED: sudo missing");
        return None;
    }
    let sh = |script: &str| {
        let out = std::process::Command::new("sh").arg("-c").arg(script).output().unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh(&format!("id -u {user} >/dev/null 2>&1 || useradd -M -s /bin/sh {user}"));
    sh(&format!("echo '{user}:{password}' | chpasswd"));
    sh(&format!(
        "printf '{user} ALL=(ALL) ALL\\n' > /etc/sudoers.d/nautes-test && chmod 0440 /etc/sudoers.d/nautes-test"
    ));
    Some(user)
}

#[test]
fn a_sudo_password_goes_to_sudo_only_and_never_to_output_or_logs() {
    const PASSWORD: &str = "Sudo-Pw-7c1e9b";
    let Some(e) = env(&nodes(1)) else { return };
    let Some(user) = sudo_user(PASSWORD) else { return };
    let h = &e.hosts.hosts[0];
    let inventory = |_: ()| {
        e.s.write_inventory(&format!(
            "ssh:\n  identityFile: {}\n  knownHosts: known_hosts\n  user: {user}\n  sudo: password\n  sudoPassword: {{ env: NAUTES_TEST_SUDO }}\nartifacts:\n  mode: airgap\n  bundle: bundle\nhosts:\n  - name: node-1\n    address: {}\n    port: {}\n    waive: [systemd]\nclusters:\n{}",
            e.hosts.client_key().display(),
            h.address,
            hosts::PORT,
            e.cluster("main", V1, &["node-1"], &[])
        ))
    };
    inventory(());
    let wrong =
        e.s.command(&["--yes", "apply", "-i", "inventory.yaml"])
            .env("NAUTES_TEST_SUDO", "not-the-password")
            .output()
            .unwrap();
    assert_eq!(code(&wrong), 1, "a wrong sudo password fails");
    assert!(stderr(&wrong).contains("node-1"), "{}", stderr(&wrong));

    let out =
        e.s.command(&["--yes", "apply", "-i", "inventory.yaml"])
            .env("NAUTES_TEST_SUDO", PASSWORD)
            .output()
            .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    use std::os::unix::fs::MetadataExt;
    let config = e.hosts.host_path(0, "/etc/rancher/k3s/config.yaml");
    assert_eq!(
        std::fs::metadata(&config).unwrap().uid(),
        0,
        "files were written as root through sudo"
    );
    for text in [
        stderr(&out),
        cli::stdout(&out),
        stderr(&wrong),
        e.s.read(".nautes/state.json"),
    ] {
        assert!(!text.contains(PASSWORD), "the sudo password leaked");
    }
    for log in std::fs::read_dir(e.s.workdir().join("logs")).unwrap() {
        assert!(
            !std::fs::read_to_string(log.unwrap().path()).unwrap().contains(PASSWORD),
            "the sudo password is in a run log"
        );
    }
}

/// With Dex installed, each server's apiserver signs users in through it:
/// the kube-apiserver-arg OIDC flags in its config and our CA (the PKI
/// step's) where `oidc-ca-file` names it, which the stand-in checks as the
/// apiserver would; agents get neither. `outputs` then writes the users'
/// kubeconfig beside the admin's, with `kubectl oidc-login` as its credential.
#[test]
fn servers_trust_dex_with_our_ca_and_outputs_writes_the_users_kubeconfig() {
    let Some(e) = env(&nodes(2)) else { return };
    std::fs::write(e.s.path().join("gitlab-token"), "glpat-unused-unused-01").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(e.s.path().join("gitlab-token"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let cluster = e.cluster("main", V1, &["node-1"], &["node-2"]) + "    usage: [host]\n";
    e.s.write_inventory(&format!(
        "settings:\n  domain: sso.test\n  timeouts:\n    nodeReady: 30s\nssh:\n  identityFile: {}\n  knownHosts: known_hosts\nartifacts:\n  mode: airgap\n  bundle: bundle\n{}clusters:\n{cluster}\
         components:\n  gitlab:\n    placement: external\n    external:\n      url: http://127.0.0.1:9\n      token: {{ file: gitlab-token }}\n    values:\n      group: acme\n  dex: {{}}\n",
        e.hosts.client_key().display(),
        e.hosts.inventory_hosts(),
    ));
    let out = e.apply(&["--only", "k3s/main/kubeconfig", "k3s/main/agent/node-2"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let config = e.host_file(0, "/etc/rancher/k3s/config.yaml");
    let expected =
        "kube-apiserver-arg:\n  - \"oidc-issuer-url=https://dex.sso.test\"\n  - \"oidc-client-id=kubernetes\"\n  \
                    - \"oidc-username-claim=email\"\n  - \"oidc-groups-claim=groups\"\n  \
                    - \"oidc-ca-file=/etc/rancher/k3s/nautes-ca.crt\"\n";
    assert!(config.contains(expected), "{config}");
    let ca_path = e.s.state()["steps"]["pki"]["outputs"]["ca"]["cert"]
        .as_str()
        .unwrap()
        .to_string();
    let ca = std::fs::read_to_string(&ca_path).unwrap();
    assert!(ca.contains("BEGIN CERTIFICATE"));
    assert_eq!(e.host_file(0, "/etc/rancher/k3s/nautes-ca.crt"), ca);
    // An agent runs no apiserver.
    assert!(!e.host_file(1, "/etc/rancher/k3s/config.yaml").contains("oidc"));
    assert!(!e.hosts.host_path(1, "/etc/rancher/k3s/nautes-ca.crt").exists());

    // Forced again, the server's step sends nothing and restarts nothing: the CA is there already.
    let out = e.apply(&["--only", "k3s/main/server/node-1"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let outputs = e.outputs("k3s/main/server/node-1");
    assert_eq!(
        (&outputs["bytes_sent"], &outputs["restarted"]),
        (&serde_json::json!(0), &serde_json::json!(false))
    );

    let out = e.s.command(&["--output", "json", "outputs"]).output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let path = e.s.workdir().join("outputs/main/oidc.kubeconfig");
    assert_eq!(shown["clusters"][0]["userKubeconfig"], serde_json::json!(path));
    // The real kubectl reads it as a kubeconfig.
    let view = std::process::Command::new(controlplane::tool("kubectl").unwrap())
        .args(["config", "view", "--raw", "-o", "json", "--kubeconfig"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(view.status.success(), "{}", String::from_utf8_lossy(&view.stderr));
    let user: serde_json::Value = serde_json::from_slice(&view.stdout).unwrap();
    let admin: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(e.s.workdir().join("outputs/main/kubeconfig")).unwrap()).unwrap();
    assert_eq!(
        user["clusters"][0]["cluster"]["server"].as_str(),
        admin["clusters"][0]["cluster"]["server"].as_str()
    );
    let exec = &user["users"][0]["user"]["exec"];
    assert_eq!(exec["command"], "kubectl");
    use base64::Engine;
    let ca_b64 = base64::engine::general_purpose::STANDARD.encode(&ca);
    assert_eq!(
        exec["args"],
        serde_json::json!([
            "oidc-login",
            "get-token",
            "--oidc-issuer-url=https://dex.sso.test",
            "--oidc-client-id=kubernetes",
            "--oidc-extra-scope=email",
            "--oidc-extra-scope=groups",
            format!("--certificate-authority-data={ca_b64}")
        ])
    );
    assert!(user["users"][0]["user"]["token"].is_null(), "no credential of its own");
}

/// `components.harbor.values.mirror`: every node, server and agent, gets
/// registries.yaml naming the Harbor installed in the cluster at the
/// ingress, and our CA where that file says, over real SSH; forced again,
/// nothing is sent.
#[test]
fn nodes_pull_from_the_harbor_installed_here_through_registries_yaml_with_our_ca() {
    let Some(e) = env(&nodes(2)) else { return };
    // The planned releases' charts, for the air-gap bundle to hold (not applied here).
    let bundle = e.s.path().join("bundle");
    let home = e.s.path().join("helm");
    crate::support::platform::helm_package("traefik-standin", "10.24.0", &bundle.join("traefik/10.24.0"), &home);
    crate::support::platform::helm_package("harbor-standin", "1.9.1", &bundle.join("harbor/1.9.1"), &home);
    nautes_install::artifacts::write_checksums(&bundle).unwrap();
    let cluster = e.cluster("main", V1, &["node-1"], &["node-2"]) + "    usage: [host]\n";
    e.s.write_inventory(&format!(
        "settings:\n  domain: reg.test\n  timeouts:\n    nodeReady: 30s\nssh:\n  identityFile: {}\n  knownHosts: known_hosts\nartifacts:\n  mode: airgap\n  bundle: bundle\n{}clusters:\n{cluster}\
         components:\n  traefik:\n    values:\n      websecureNodePort: 30443\n  harbor:\n    placement: cluster\n    values:\n      mirror: true\n",
        e.hosts.client_key().display(),
        e.hosts.inventory_hosts(),
    ));
    let out = e.apply(&["--only", "k3s/main/kubeconfig", "k3s/main/agent/node-2"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let ca_path = e.s.state()["steps"]["pki"]["outputs"]["ca"]["cert"]
        .as_str()
        .unwrap()
        .to_string();
    let ca = std::fs::read_to_string(&ca_path).unwrap();
    for node in 0..2 {
        let text = e.host_file(node, "/etc/rancher/k3s/registries.yaml");
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or_else(|err| panic!("{err}: {text}"));
        let endpoint = &doc["mirrors"]["harbor.reg.test"]["endpoint"][0];
        assert_eq!(endpoint.as_str(), Some("https://harbor.reg.test:30443"), "{text}");
        let ca_file = doc["configs"]["harbor.reg.test:30443"]["tls"]["ca_file"].as_str();
        assert_eq!(ca_file, Some("/etc/rancher/k3s/nautes-ca.crt"), "{text}");
        assert_eq!(e.host_file(node, "/etc/rancher/k3s/nautes-ca.crt"), ca, "node {node}");
    }
    let out = e.apply(&["--only", "k3s/main/agent/node-2"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(e.outputs("k3s/main/agent/node-2")["bytes_sent"], serde_json::json!(0));
}

const ETCD_DB: &str = "/var/lib/rancher/k3s/server/db/etcd/member/snap/db";

/// The stand-in datastore of a server: its etcd cluster id and data.
fn etcd_db(e: &Env, i: usize) -> serde_json::Value {
    serde_json::from_str(&e.host_file(i, ETCD_DB)).unwrap_or(serde_json::Value::Null)
}

fn commands(e: &Env, i: usize) -> Vec<String> {
    e.host_file(i, "/var/lib/rancher/k3s/standin-commands.log")
        .lines()
        .map(str::to_string)
        .collect()
}

fn systemctl_calls(e: &Env, i: usize) -> Vec<String> {
    e.host_file(i, "/opt/nautes/standin/systemd/calls.log")
        .lines()
        .filter(|l| l.ends_with(" k3s") || l.ends_with(" k3s.service"))
        .map(str::to_string)
        .collect()
}

#[test]
fn backup_takes_an_etcd_snapshot_and_restore_resets_the_cluster_onto_it() {
    let Some(e) = env(&nodes(3)) else { return };
    // A service manager on every host, as K3s's installer expects: K3s then
    // stays running, which `etcd-snapshot save` needs and `--cluster-reset` forbids.
    let systemctl = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/service_hosts_standin/systemctl");
    for i in 0..3 {
        let bin = e.hosts.host_path(i, "/usr/local/bin/systemctl");
        std::fs::copy(&systemctl, &bin).unwrap();
    }
    e.inventory(&e.cluster("ha", V1, &["node-1", "node-2", "node-3"], &[]));
    let out = e.apply(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let before = etcd_db(&e, 0);
    let cluster_id = before["cluster-id"].as_str().unwrap().to_string();
    for i in 1..3 {
        assert_eq!(
            etcd_db(&e, i)["cluster-id"],
            cluster_id.as_str(),
            "node-{} joined",
            i + 1
        );
    }
    // What the cluster holds when the backup is taken.
    let mut db = before.clone();
    db["data"] = serde_json::json!({"probe": "written-before-the-backup"});
    std::fs::write(e.hosts.host_path(0, ETCD_DB), db.to_string()).unwrap();

    let pass = e.s.path().join("passphrase");
    std::fs::write(&pass, "k3s etcd backup passphrase\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let archive = e.s.path().join("backup.tar.gz");
    let out =
        e.s.command(&["backup", "-i", "inventory.yaml", "--passphrase-file"])
            .arg(&pass)
            .arg("--out")
            .arg(&archive)
            .output()
            .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("etcd snapshots of the clusters: ha"),
        "{}",
        stdout(&out)
    );
    // Exactly: one save under our name on the first server, then its delete.
    let ran = commands(&e, 0);
    let saves: Vec<&String> = ran.iter().filter(|c| c.starts_with("etcd-snapshot")).collect();
    assert_eq!(saves.len(), 2, "{ran:?}");
    let name = saves[0]
        .strip_prefix("etcd-snapshot save --name ")
        .expect("a named save");
    assert!(name.starts_with("nautes-"), "{name}");
    let deleted = saves[1].strip_prefix("etcd-snapshot delete ").expect("then a delete");
    assert!(deleted.starts_with(&format!("{name}-node-1-")), "{deleted}");
    assert!(
        std::fs::read_dir(e.hosts.host_path(0, "/var/lib/rancher/k3s/server/db/snapshots"))
            .unwrap()
            .next()
            .is_none(),
        "the snapshot taken for the backup is not left on the server"
    );
    assert!(commands(&e, 1).iter().all(|c| !c.starts_with("etcd-snapshot")));
    let bytes = std::fs::read(&archive).unwrap();
    assert!(archive::members(&bytes).contains(&"clusters/ha/etcd.snapshot".to_string()));
    assert!(
        !archive::contains(&archive::gunzip(&bytes), "written-before-the-backup"),
        "the snapshot is encrypted in the archive"
    );

    // The cluster moves on after the backup.
    db["data"] = serde_json::json!({"probe": "written-after-the-backup"});
    std::fs::write(e.hosts.host_path(0, ETCD_DB), db.to_string()).unwrap();
    let calls_before: Vec<usize> = (0..3).map(|i| systemctl_calls(&e, i).len()).collect();
    let restore = |archive: &Path| {
        e.s.command(&[
            "restore",
            "-i",
            "inventory.yaml",
            "--force",
            "--clusters",
            "--passphrase-file",
        ])
        .arg(&pass)
        .arg("--from")
        .arg(archive)
        .output()
        .unwrap()
    };

    // A flipped byte in the snapshot member: refused naming it, nothing touched.
    let damaged = e.s.path().join("damaged.tar.gz");
    std::fs::write(
        &damaged,
        archive::with_member_byte_flipped(&bytes, "clusters/ha/etcd.snapshot"),
    )
    .unwrap();
    let out = restore(&damaged);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(stderr(&out).contains("clusters/ha/etcd.snapshot"), "{}", stderr(&out));
    for (i, before) in calls_before.iter().enumerate() {
        assert_eq!(systemctl_calls(&e, i).len(), *before, "node-{} untouched", i + 1);
    }
    assert_eq!(etcd_db(&e, 0)["data"]["probe"], "written-after-the-backup");

    let out = restore(&archive);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("the etcd of cluster ha"), "{}", stdout(&out));
    // The first server was reset onto the snapshot while stopped, then started.
    let reset: Vec<String> = commands(&e, 0)
        .into_iter()
        .filter(|c| c.contains("--cluster-reset"))
        .collect();
    assert_eq!(reset.len(), 1, "{reset:?}");
    assert!(
        reset[0].starts_with(
            "server --cluster-reset --cluster-reset-restore-path=/var/lib/rancher/k3s/server/nautes-restore-"
        ),
        "{}",
        reset[0]
    );
    let restored = etcd_db(&e, 0);
    assert_eq!(restored["data"]["probe"], "written-before-the-backup");
    let new_id = restored["cluster-id"].as_str().unwrap();
    assert_ne!(new_id, cluster_id, "a reset makes a new one-member cluster");
    assert_eq!(
        e.api
            .get("/api/v1/namespaces/kube-system/configmaps/k3s-standin-cluster")["data"]["etcd-cluster-id"],
        new_id
    );
    // The other servers forgot the old cluster and rejoined the new one.
    for i in 1..3 {
        let joined = &e.hosts.host_path(i, ETCD_DB);
        wait_for("the server to rejoin", Duration::from_secs(20), || {
            std::fs::read_to_string(joined).is_ok_and(|t| t.contains(new_id))
        });
    }
    for (i, before) in calls_before.iter().enumerate() {
        let calls = systemctl_calls(&e, i)[*before..].to_vec();
        assert_eq!(calls, ["stop k3s.service", "start k3s.service"], "node-{}", i + 1);
    }
    let leftovers: Vec<_> = std::fs::read_dir(e.hosts.host_path(0, "/var/lib/rancher/k3s/server"))
        .unwrap()
        .flatten()
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("nautes-restore-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_single_server_on_sqlite_is_named_as_not_in_the_backup() {
    let Some(e) = env(&nodes(1)) else { return };
    e.inventory(&e.cluster("solo", V1, &["node-1"], &[]));
    let out = e.apply(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let pass = e.s.path().join("passphrase");
    std::fs::write(&pass, "sqlite passphrase\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let archive = e.s.path().join("backup.tar.gz");
    let out =
        e.s.command(&[
            "--output",
            "json",
            "backup",
            "-i",
            "inventory.yaml",
            "--passphrase-file",
        ])
        .arg(&pass)
        .arg("--out")
        .arg(&archive)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let done: serde_json::Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(done["clusters"], serde_json::json!([]));
    let note = done["notBackedUp"][0].as_str().unwrap_or_default();
    assert!(note.contains("`solo`") && note.contains("SQLite"), "{done}");
    assert!(commands(&e, 0).iter().all(|c| !c.starts_with("etcd-snapshot")));
}
