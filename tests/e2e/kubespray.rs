//! Kubespray clusters with the real `ansible-playbook` against real sshd
//! test hosts, driving a stand-in Kubespray tree (tests/kubespray_standin).

use crate::support::{cli, controlplane, hosts};

use std::path::Path;

use cli::{code, stderr, Scratch};
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
    let hosts = TestHosts::start(n);
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
