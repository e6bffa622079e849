//! Kubespray clusters with the real `ansible-playbook` against real sshd
//! test hosts, driving a stand-in Kubespray tree (tests/kubespray_standin).

use crate::support::{archive, cli, controlplane, hosts};

use std::path::Path;

use cli::{code, stderr, stdout, Scratch};
use controlplane::ControlPlane as KubeApiStandin;
use hosts::TestHosts;

fn ansible_ready() -> bool {
    let ok = std::process::Command::new("ansible-playbook")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("ansible-playbook is missing (.ci/install.d/25-ansible.sh installs it)");
        }
        eprintln!("SKIPPED: ansible-playbook missing");
    }
    ok && !hosts::skip_unless_available() && !controlplane::skip_unless_available()
}

struct Env {
    hosts: TestHosts,
    api: KubeApiStandin,
    s: Scratch,
}

fn env(n: usize) -> Env {
    env_with_dirs(n, &[])
}

/// `n` hosts with `dirs` (host path, directory name) private to each.
fn env_with_dirs(n: usize, dirs: &[(&str, &str)]) -> Env {
    let names: Vec<(String, String)> = (1..=n).map(|i| (format!("node-{i}"), format!("node-{i}"))).collect();
    let hosts = TestHosts::start_named_with_dirs(&names, dirs);
    let api = KubeApiStandin::start_with_nodes(&[]);
    let s = Scratch::new();
    std::fs::write(s.path().join("known_hosts"), hosts.known_hosts()).unwrap();
    Env { hosts, api, s }
}

impl Env {
    fn inventory(&self, kube_version: &str, workers: &[&str], extra_vars: &str) {
        let standin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kubespray_standin");
        self.s.write_inventory(&format!(
            "settings:\n  timeouts:\n    nodeReady: 30s\nssh:\n  identityFile: {key}\n  knownHosts: known_hosts\n{hosts}clusters:\n  - name: ks\n    type: kubespray\n    kubespray:\n      version: v2.23.1\n      kubeVersion: {kube_version}\n      path: {path}\n      controlPlane: [node-1]\n      workers: [{workers}]\n      apiEndpoint: {api}\n      extraVars:\n        kube_config_dir: /opt/nautes/kubernetes\n        ansible_python_interpreter: /usr/bin/python3\n        standin_api_url: {api}\n        standin_api_token: {token}\n        standin_api_ca: {ca}\n        standin_api_ca_data: {ca_data}\n{extra_vars}",
            key = self.hosts.client_key().display(),
            hosts = self.hosts.inventory_hosts(),
            path = standin.display(),
            workers = workers.join(", "),
            api = self.api.url(),
            token = self.api.token,
            ca = self.api.ca_path(),
            ca_data = self.api.ca_b64(),
        ));
    }

    fn apply(&self) -> std::process::Output {
        self.s
            .command(&["--yes", "apply", "-i", "inventory.yaml"])
            .output()
            .unwrap()
    }

    fn log(&self, i: usize) -> Vec<String> {
        std::fs::read_to_string(self.hosts.host_path(i, "/opt/nautes/kubespray.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split_once(' ').map(|x| x.1).unwrap_or("").to_string())
            .collect()
    }

    fn nodes(&self) -> Vec<String> {
        let mut n = self.api.node_names();
        n.sort();
        n
    }
}

#[test]
fn install_rerun_upgrade_scale_remove_and_reset() {
    if !ansible_ready() {
        return;
    }
    let e = env(3);
    e.inventory("v1.27.7", &["node-2"], "");
    let out = e.apply();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(e.nodes(), ["node-1", "node-2"]);
    assert_eq!(e.log(0), ["cluster v1.27.7"]);
    assert_eq!(e.log(1), ["cluster v1.27.7"]);
    assert!(e.log(2).is_empty(), "node-3 is not in the cluster");

    // The inventory we render is what Ansible (and so Kubespray) reads.
    let inv = e.s.workdir().join("kubespray/ks/hosts.yaml");
    let listed = std::process::Command::new("ansible-inventory")
        .arg("-i")
        .arg(&inv)
        .arg("--list")
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["kube_control_plane"]["hosts"], serde_json::json!(["node-1"]));
    assert_eq!(listed["etcd"]["hosts"], serde_json::json!(["node-1"]));
    let mut k8s = listed["k8s_cluster"]["children"].as_array().unwrap().clone();
    k8s.sort_by_key(|v| v.to_string());
    assert_eq!(
        k8s,
        [serde_json::json!("kube_control_plane"), serde_json::json!("kube_node")]
    );
    assert_eq!(listed["_meta"]["hostvars"]["node-2"]["ip"], e.hosts.hosts[1].address);
    assert_eq!(listed["_meta"]["hostvars"]["node-2"]["ansible_port"], hosts::PORT);
    let kubeconfig = std::fs::read_to_string(e.s.workdir().join("outputs/ks/kubeconfig")).unwrap();
    assert!(kubeconfig.contains(&e.api.url()), "{kubeconfig}");

    let again = e.apply();
    assert!(stderr(&again).contains(": 0 done, "), "{}", stderr(&again));

    e.inventory("v1.28.3", &["node-2"], "");
    let out = e.apply();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(e.log(0).last().unwrap(), "upgrade v1.28.3", "upgrade-cluster.yml ran");
    assert_eq!(
        e.api.get("/api/v1/nodes/node-2")["status"]["nodeInfo"]["kubeletVersion"],
        "v1.28.3"
    );

    e.inventory("v1.28.3", &["node-2", "node-3"], "");
    let out = e.apply();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(e.log(2), ["scale v1.28.3"], "scale.yml added node-3");
    assert_eq!(
        e.log(1).len(),
        2,
        "scale.yml was limited to the new node: {:?}",
        e.log(1)
    );
    assert_eq!(e.nodes(), ["node-1", "node-2", "node-3"]);

    e.inventory("v1.28.3", &["node-2"], "");
    let out = e.apply();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(e.log(2).last().unwrap(), "removed", "remove-node.yml ran on node-3");
    assert_eq!(e.nodes(), ["node-1", "node-2"]);

    let out =
        e.s.command(&["--yes", "destroy", "-i", "inventory.yaml"])
            .output()
            .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(e.log(0).last().unwrap(), "reset");
    assert!(e.nodes().is_empty());
}

#[test]
fn a_failing_task_is_reported_with_its_host_and_task() {
    if !ansible_ready() {
        return;
    }
    let e = env(2);
    e.inventory("v1.27.7", &["node-2"], "        standin_fail_host: node-2\n");
    let out = e.apply();
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(
        err.contains("host node-2 failed task `Fail on demand`: injected failure on node-2"),
        "{err}"
    );
    assert_eq!(e.s.step_status("kubespray/ks/cluster").as_deref(), Some("failed"));
}

/// With Dex installed, Kubespray gets the apiserver's OIDC settings as its
/// `kube_oidc_*` variables and our CA is in `kube_cert_dir` on the control
/// plane before the playbook runs (the stand-in refuses a missing one, as
/// the apiserver would); `outputs` writes the users' kubeconfig.
#[test]
fn the_control_plane_trusts_dex_through_kube_oidc_variables_and_our_ca() {
    if !ansible_ready() {
        return;
    }
    let e = env(2);
    e.inventory(
        "v1.27.7",
        &["node-2"],
        "        kube_cert_dir: /opt/nautes/kubernetes/ssl\n",
    );
    let token = e.s.path().join("gitlab-token");
    std::fs::write(&token, "glpat-unused-unused-01").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = std::fs::read_to_string(e.s.inventory()).unwrap().replace("settings:\n", "settings:\n  domain: sso.test\n")
        + "    usage: [host]\ncomponents:\n  gitlab:\n    placement: external\n    external:\n      url: http://127.0.0.1:9\n      \
           token: { file: gitlab-token }\n    values:\n      group: acme\n  dex: {}\n";
    std::fs::write(e.s.inventory(), text).unwrap();
    let out =
        e.s.command(&[
            "--yes",
            "apply",
            "-i",
            "inventory.yaml",
            "--only",
            "kubespray/ks/kubeconfig",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let vars: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(e.s.workdir().join("kubespray/ks/group_vars/all/nautes.yml")).unwrap(),
    )
    .unwrap();
    let var = |k: &str| vars[k].clone();
    assert_eq!(var("kube_oidc_auth"), serde_yaml::Value::Bool(true));
    assert_eq!(var("kube_oidc_url").as_str(), Some("https://dex.sso.test"));
    assert_eq!(var("kube_oidc_client_id").as_str(), Some("kubernetes"));
    assert_eq!(var("kube_oidc_username_claim").as_str(), Some("email"));
    assert_eq!(var("kube_oidc_groups_claim").as_str(), Some("groups"));
    assert_eq!(
        var("kube_oidc_ca_file").as_str(),
        Some("/opt/nautes/kubernetes/ssl/nautes-ca.crt")
    );
    let ca_path = e.s.state()["steps"]["pki"]["outputs"]["ca"]["cert"]
        .as_str()
        .unwrap()
        .to_string();
    let ca = std::fs::read_to_string(ca_path).unwrap();
    let on = |i: usize| std::fs::read_to_string(e.hosts.host_path(i, "/opt/nautes/kubernetes/ssl/nautes-ca.crt"));
    assert_eq!(on(0).unwrap(), ca, "on the control plane");
    assert!(on(1).is_err(), "a worker runs no apiserver");

    let out = e.s.command(&["--output", "json", "outputs"]).output().unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let path = e.s.workdir().join("outputs/ks/oidc.kubeconfig");
    assert_eq!(shown["clusters"][0]["userKubeconfig"], serde_json::json!(path));
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("--oidc-issuer-url=https://dex.sso.test"));
}

/// The trust store a node's containerd reads, private to each test host.
const TRUST_DIRS: &[(&str, &str)] = &[
    ("/usr/local/share/ca-certificates", "local-ca-certificates"),
    ("/etc/ssl/certs", "etc-ssl-certs"),
];

/// Run `command` on test host `i` over its real sshd, as the installer reaches it.
fn on_host(e: &Env, i: usize, command: &str) -> std::process::Output {
    let t = e.hosts.ssh_target(i);
    std::process::Command::new("ssh")
        .args(["-o", "BatchMode=yes", "-o"])
        .arg(format!(
            "UserKnownHostsFile={}",
            e.s.path().join("known_hosts").display()
        ))
        .arg("-i")
        .arg(e.hosts.client_key())
        .args(["-p", &t.port.to_string(), "-l", "root", &t.address, command])
        .output()
        .unwrap()
}

/// With `components.harbor.values.mirror`, Kubespray's containerd gets the
/// in-cluster Harbor as a mirror (its own variable) and every node's real
/// trust store (the real `update-ca-certificates`) holds our CA before the
/// playbook runs, so the containerd it installs trusts Harbor's ingress.
#[test]
fn kubespray_nodes_trust_our_ca_and_pull_from_the_harbor_installed_here() {
    if !ansible_ready() {
        return;
    }
    let e = env_with_dirs(2, TRUST_DIRS);
    e.inventory("v1.27.7", &["node-2"], "");
    let text = std::fs::read_to_string(e.s.inventory()).unwrap().replace("settings:\n", "settings:\n  domain: reg.test\n")
        + "    usage: [host]\ncomponents:\n  traefik: {}\n  harbor:\n    placement: cluster\n    cluster: ks\n    values:\n      mirror: true\n";
    std::fs::write(e.s.inventory(), text).unwrap();
    let out =
        e.s.command(&[
            "--yes",
            "apply",
            "-i",
            "inventory.yaml",
            "--only",
            "kubespray/ks/cluster",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(e.log(0), ["cluster v1.27.7"]);

    let vars: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(e.s.workdir().join("kubespray/ks/group_vars/all/nautes.yml")).unwrap(),
    )
    .unwrap();
    let harbor = vars["containerd_registries_mirrors"]
        .as_sequence()
        .and_then(|m| m.iter().find(|m| m["prefix"].as_str() == Some("harbor.reg.test")))
        .unwrap_or_else(|| panic!("no Harbor mirror: {vars:?}"));
    assert_eq!(
        harbor["mirrors"][0]["host"].as_str(),
        Some("https://harbor.reg.test:30443")
    );

    let ca_path = e.s.state()["steps"]["pki"]["outputs"]["ca"]["cert"]
        .as_str()
        .unwrap()
        .to_string();
    let ca = std::fs::read_to_string(ca_path).unwrap();
    for i in 0..2 {
        let laid = std::fs::read_to_string(e.hosts.host_path(i, "/usr/local/share/ca-certificates/nautes-ca.crt"))
            .unwrap_or_else(|err| panic!("node-{}: {err}", i + 1));
        assert_eq!(laid.trim(), ca.trim(), "node-{}", i + 1);
        // The bundle Go (so containerd) reads now vouches for our CA.
        let verify = on_host(
            &e,
            i,
            "openssl verify -no-CApath -CAfile /etc/ssl/certs/ca-certificates.crt /usr/local/share/ca-certificates/nautes-ca.crt",
        );
        assert!(
            verify.status.success(),
            "node-{}: {}{}",
            i + 1,
            stdout(&verify),
            stderr(&verify)
        );
    }
}

/// What Kubespray's etcd role writes outside the default private dirs.
const ETCD_DIRS: &[(&str, &str)] = &[("/etc/ssl/etcd", "etc-ssl-etcd"), ("/var/lib/etcd", "var-lib-etcd")];
const ETCD_FILES: &[(&str, &str)] = &[("/etc/etcd.env", "etcd.env")];
const ETCD_MEMBER: &str = "clusters/ks/etcd.snapshot";

/// The real etcdctl on this machine, as the admin of member `i`.
fn etcdctl(e: &Env, i: usize, args: &[&str]) -> std::process::Output {
    let certs = |f: String| e.hosts.host_path(i, &format!("/etc/ssl/etcd/ssl/{f}"));
    let node = &e.hosts.hosts[i].name;
    std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{}:2379", e.hosts.hosts[i].address))
        .arg("--cacert")
        .arg(certs("ca.pem".into()))
        .arg("--cert")
        .arg(certs(format!("admin-{node}.pem")))
        .arg("--key")
        .arg(certs(format!("admin-{node}-key.pem")))
        .args(args)
        .output()
        .unwrap()
}

/// `key=value` lines under /registry/, as member `i` serves them.
fn registry(e: &Env, i: usize) -> Vec<String> {
    let out = etcdctl(e, i, &["get", "--prefix", "/registry/"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    lines.chunks(2).map(|kv| kv.join("=")).collect()
}

fn etcd_calls(e: &Env, i: usize) -> Vec<String> {
    std::fs::read_to_string(e.hosts.host_path(i, "/opt/nautes/standin/systemd/calls.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.ends_with(" etcd.service"))
        .map(str::to_string)
        .collect()
}

#[test]
fn backup_snapshots_the_real_etcd_and_restore_brings_its_keys_back_on_every_member() {
    if !ansible_ready() {
        return;
    }
    let names: Vec<(String, String)> = (1..=3).map(|i| (format!("node-{i}"), format!("node-{i}"))).collect();
    let hosts = TestHosts::start_named_with_files(&names, ETCD_DIRS, ETCD_FILES);
    let systemctl = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/service_hosts_standin/systemctl");
    for i in 0..3 {
        std::fs::copy(&systemctl, hosts.host_path(i, "/usr/local/bin/systemctl")).unwrap();
    }
    let e = Env {
        hosts,
        api: KubeApiStandin::start_with_nodes(&[]),
        s: Scratch::new(),
    };
    std::fs::write(e.s.path().join("known_hosts"), e.hosts.known_hosts()).unwrap();
    let standin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kubespray_standin");
    // A data dir other than Kubespray's default: restore must read it from /etc/etcd.env.
    e.s.write_inventory(&format!(
        "settings:\n  timeouts:\n    nodeReady: 30s\nssh:\n  identityFile: {key}\n  knownHosts: known_hosts\n{hosts}clusters:\n  - name: ks\n    type: kubespray\n    kubespray:\n      version: v2.23.1\n      kubeVersion: v1.27.7\n      path: {path}\n      controlPlane: [node-1, node-2, node-3]\n      apiEndpoint: {api}\n      extraVars:\n        kube_config_dir: /opt/nautes/kubernetes\n        ansible_python_interpreter: /usr/bin/python3\n        standin_api_url: {api}\n        standin_api_token: {token}\n        standin_api_ca: {ca}\n        standin_api_ca_data: {ca_data}\n        standin_etcd: true\n        standin_etcd_pki: {pki}\n        etcd_data_dir: /var/lib/etcd/data\n",
        key = e.hosts.client_key().display(),
        hosts = e.hosts.inventory_hosts(),
        path = standin.display(),
        api = e.api.url(),
        token = e.api.token,
        ca = e.api.ca_path(),
        ca_data = e.api.ca_b64(),
        pki = e.s.path().join("etcd-pki").display(),
    ));
    let out = e.apply();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for (k, v) in [
        ("/registry/secrets/default/probe", "value-before-the-backup"),
        ("/registry/configmaps/default/kept", "kept"),
    ] {
        let put = etcdctl(&e, 1, &["put", k, v]);
        assert!(put.status.success(), "{}", stderr(&put));
    }
    let written = registry(&e, 2);
    assert_eq!(written.len(), 2, "{written:?}");

    let pass = e.s.path().join("passphrase");
    std::fs::write(&pass, "etcd backup passphrase\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let archive_path = e.s.path().join("backup.tar.gz");
    let out =
        e.s.command(&["backup", "-i", "inventory.yaml", "--passphrase-file"])
            .arg(&pass)
            .arg("--out")
            .arg(&archive_path)
            .output()
            .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let bytes = std::fs::read(&archive_path).unwrap();
    assert!(archive::members(&bytes).contains(&ETCD_MEMBER.to_string()));
    assert!(
        !archive::contains(&archive::gunzip(&bytes), "value-before-the-backup"),
        "the snapshot is encrypted in the archive"
    );
    let parent = e.hosts.host_path(0, "/var/lib/etcd");
    let left: Vec<String> = std::fs::read_dir(&parent)
        .unwrap()
        .flatten()
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["data"], "the snapshot file is removed from the member");

    // The data is destroyed after the backup, and something new is written.
    let del = etcdctl(&e, 0, &["del", "--prefix", "/registry/"]);
    assert!(del.status.success(), "{}", stderr(&del));
    let put = etcdctl(&e, 0, &["put", "/registry/pods/default/after", "written-after"]);
    assert!(put.status.success(), "{}", stderr(&put));
    let destroyed = registry(&e, 0);
    let calls_before: Vec<usize> = (0..3).map(|i| etcd_calls(&e, i).len()).collect();

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
    // A flipped byte in the snapshot: refused naming it, etcd untouched.
    let damaged = e.s.path().join("damaged.tar.gz");
    std::fs::write(&damaged, archive::with_member_byte_flipped(&bytes, ETCD_MEMBER)).unwrap();
    let out = restore(&damaged);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(stderr(&out).contains(ETCD_MEMBER), "{}", stderr(&out));
    assert_eq!(registry(&e, 0), destroyed);
    for (i, before) in calls_before.iter().enumerate() {
        assert_eq!(etcd_calls(&e, i).len(), *before, "node-{} untouched", i + 1);
    }

    let out = restore(&archive_path);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("the etcd of cluster ks"), "{}", stdout(&out));
    // Every member serves the keys of the backup, and only those.
    for (i, before) in calls_before.iter().enumerate() {
        assert_eq!(registry(&e, i), written, "member node-{}", i + 1);
        let calls = etcd_calls(&e, i)[*before..].to_vec();
        assert_eq!(calls, ["stop etcd.service", "start etcd.service"], "node-{}", i + 1);
        let old: Vec<String> = std::fs::read_dir(e.hosts.host_path(i, "/var/lib/etcd"))
            .unwrap()
            .flatten()
            .map(|d| d.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "data")
            .collect();
        assert!(
            old.len() == 1 && old[0].starts_with("data.before-restore-"),
            "the replaced data is kept beside, nothing else is left: {old:?}"
        );
    }
    // One cluster of three again, which takes writes.
    let members = etcdctl(&e, 0, &["member", "list"]);
    assert_eq!(String::from_utf8_lossy(&members.stdout).lines().count(), 3);
    let put = etcdctl(&e, 2, &["put", "/registry/after-restore", "ok"]);
    assert!(put.status.success(), "{}", stderr(&put));
}
