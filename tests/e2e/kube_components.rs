//! vcluster, HNC and tenant namespace trees end to end through the real
//! binary: a brought-in host cluster (a real control plane), the vcluster
//! chart rendered by the real `helm template` from an air-gap bundle, the
//! virtual cluster's API (a second real control plane at the NodePort, its
//! secret written by the stand-in syncer), HNC installed in it (its manager
//! a stand-in controller) and a tenant tree created, changed, guarded and
//! removed.

use crate::support::{cli, controlplane, port_file, standin_controllers};

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use cli::{code, stderr, Scratch};
use controlplane::ControlPlane;
use serde_json::json;
use standin_controllers::{hnc_manager, local_path_provisioner, vcluster_syncer, Api};

/// A free loopback port in the NodePort range, for the vcluster's API.
/// The air-gap bundle: the HNC manifest and the packaged vcluster chart.
fn make_bundle(s: &Scratch) {
    let bundle = s.path().join("bundle");
    let hnc = bundle.join("hnc/v1.0.0");
    std::fs::create_dir_all(&hnc).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kube/hnc-default.yaml"),
        hnc.join("default.yaml"),
    )
    .unwrap();
    // Two releases of the chart, so an upgrade can be planned.
    for version in ["0.10.1", "0.10.2"] {
        let charts = bundle.join("vcluster").join(version);
        let out = Command::new("helm")
            .args([
                "package",
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/charts/vcluster-standin"),
            ])
            .args(["--version", version, "--app-version", version, "-d"])
            .arg(&charts)
            .env("HELM_CACHE_HOME", s.path().join("helm"))
            .env("HELM_CONFIG_HOME", s.path().join("helm"))
            .env("HELM_DATA_HOME", s.path().join("helm"))
            .output()
            .expect("helm (installed by .ci/install.d/40-helm.sh) on PATH");
        assert!(
            out.status.success(),
            "helm package: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    crate::support::platform::overlay_real_releases(&bundle);
    let sealed = s.command(&["bundle", "seal", "--dir", "bundle"]).output().unwrap();
    assert_eq!(code(&sealed), 0, "{}", stderr(&sealed));
}

fn inventory(node_port: u16, tree: &str, allow: bool) -> String {
    versioned_inventory("0.10.1", node_port, tree, allow)
}

fn versioned_inventory(version: &str, node_port: u16, tree: &str, allow: bool) -> String {
    format!(
        "artifacts:\n  mode: airgap\n  bundle: bundle\nclusters:\n  - name: host\n    type: external\n    external:\n      kubeconfig: host.kubeconfig\nvirtualClusters:\n  - name: tenant1\n    hostCluster: host\n    version: {version}\n    expose:\n      type: nodePort\n      nodePort: {node_port}\ntenants:\n  - name: acme\n    cluster: tenant1\n    allowDeleteWithWorkloads: {allow}\n    namespaces:\n{tree}"
    )
}

const TREE: &str = "      - name: acme\n        labels: {team: acme}\n        children:\n          - name: acme-dev\n            labels: {env: dev}\n          - name: acme-prod\n            annotations: {owner: ops}\n";
const TREE_CHANGED: &str = "      - name: acme\n        labels: {team: acme}\n        children:\n          - name: acme-prod\n            annotations: {owner: ops}\n          - name: acme-test\n            labels: {env: test}\n";
const TREE_SMALLER: &str = "      - name: acme\n        labels: {team: acme}\n        children:\n          - name: acme-test\n            labels: {env: test}\n";

fn apply(s: &Scratch) -> std::process::Output {
    s.command(&["apply", "--yes", "-i", "inventory.yaml"]).output().unwrap()
}

#[test]
fn a_vcluster_with_hnc_and_a_tenant_tree_is_created_changed_guarded_and_destroyed() {
    if controlplane::skip_unless_available() {
        return;
    }
    let host = ControlPlane::start();
    let port = port_file::free_node_port();
    let mut virt = ControlPlane::start_at(port);
    // What vcluster writes into its secret: its own endpoint, which we must rewrite.
    let inner = virt.kubeconfig().replace(&virt.url(), "https://localhost:8443");
    let _syncer = vcluster_syncer(
        Api::of(&host),
        "vcluster-tenant1",
        "tenant1",
        inner,
        host.service_cidr.clone(),
    );
    let _hnc = hnc_manager(Api::of(&virt));
    // HNC's own webhooks (the real release has them; failurePolicy Fail)
    // answer once its manager's Service has a ready pod, as on a real cluster.
    virt.start_standin_controllers("webhooks");
    let s = Scratch::new();
    let host_kubeconfig = s.path().join("host.kubeconfig");
    std::fs::write(&host_kubeconfig, host.kubeconfig()).unwrap();
    std::fs::set_permissions(&host_kubeconfig, std::fs::Permissions::from_mode(0o600)).unwrap();
    make_bundle(&s);
    s.write_inventory(&inventory(port, TREE, false));

    // The chart claims a volume of the host's default StorageClass; this
    // host has none yet (as a Kubespray cluster without a provisioner):
    // refused before anything is applied, instead of a Pending claim.
    let out = apply(&s);
    assert_eq!(code(&out), 1, "no default StorageClass: {}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("vcluster tenant1 on host cluster host")
            && err.contains("no StorageClass is marked default (it has none)")
            && err.contains("values.storage.persistence: false"),
        "{err}"
    );
    assert_eq!(host.get("/api/v1/namespaces/vcluster-tenant1")["code"], 404);

    // What K3s ships: local-path, the default class, with its provisioner.
    let _provisioner = local_path_provisioner(Api::of(&host));
    let (c, body) = host.request(
        "POST",
        "/apis/storage.k8s.io/v1/storageclasses",
        "application/json",
        &json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer",
                "reclaimPolicy": "Delete"}),
    );
    assert_eq!(c, 201, "{body}");
    let out = apply(&s);
    assert_eq!(code(&out), 0, "first apply: {}", stderr(&out));

    // The chart went through the real helm with our values.
    let sts = host.get("/apis/apps/v1/namespaces/vcluster-tenant1/statefulsets/tenant1");
    let container = |sts: &serde_json::Value, name: &str| {
        sts["spec"]["template"]["spec"]["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no container {name} in {sts}"))
    };
    // k3s starts with the host's Service range, found out from the API
    // (the chart would wait for a ConfigMap only the vcluster CLI writes).
    let k3s = container(&sts, "vcluster")["args"].to_string();
    assert!(k3s.contains(&format!("--service-cidr={}", host.service_cidr)), "{k3s}");
    assert_eq!(
        host.get("/api/v1/namespaces/vcluster-tenant1/persistentvolumeclaims/data-tenant1-0")["status"]["phase"],
        "Bound"
    );
    let args = container(&sts, "syncer")["args"].to_string();
    assert!(args.contains("--tls-san=127.0.0.1"), "{args}");
    assert!(
        args.contains(&format!("--out-kube-config-server=https://127.0.0.1:{port}")),
        "{args}"
    );
    let svc = host.get("/api/v1/namespaces/vcluster-tenant1/services/tenant1");
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], port);

    // Its kubeconfig, rewritten to the exposed endpoint, private.
    let kubeconfig = s.workdir().join("outputs/vcluster-tenant1/kubeconfig");
    let text = std::fs::read_to_string(&kubeconfig).expect("vcluster kubeconfig written");
    assert!(text.contains(&format!("server: https://127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("localhost:8443"), "{text}");
    assert_eq!(
        std::fs::metadata(&kubeconfig).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // `outputs` tells the user where it is.
    let shown = s.command(&["outputs"]).output().unwrap();
    let shown = cli::stdout(&shown);
    assert!(shown.contains("Virtual clusters: vcluster/tenant1"), "{shown}");
    assert!(
        shown.contains(&format!("endpoint:   https://127.0.0.1:{port}")),
        "{shown}"
    );
    assert!(
        shown.contains("Tenant tenant/acme/namespaces: acme, acme-dev, acme-prod"),
        "{shown}"
    );

    // HNC inside the virtual cluster, and the tree: root namespace, subnamespaces by anchor.
    assert_eq!(
        virt.get("/apis/apps/v1/namespaces/hnc-system/deployments/hnc-controller-manager")["status"]
            ["availableReplicas"],
        1
    );
    assert_eq!(
        virt.get("/api/v1/namespaces/acme")["metadata"]["labels"]["team"],
        "acme"
    );
    let dev = virt.get("/api/v1/namespaces/acme-dev");
    assert_eq!(dev["metadata"]["annotations"]["hnc.x-k8s.io/subnamespace-of"], "acme");
    assert_eq!(dev["metadata"]["labels"]["env"], "dev");
    assert_eq!(
        virt.get("/api/v1/namespaces/acme-prod")["metadata"]["annotations"]["owner"],
        "ops"
    );
    assert_eq!(
        virt.get("/apis/hnc.x-k8s.io/v1alpha2/namespaces/acme/subnamespaceanchors/acme-dev")["status"]["status"],
        "Ok"
    );

    // A second run: nothing is written anywhere.
    host.reset_log();
    virt.reset_log();
    let out = apply(&s);
    assert_eq!(code(&out), 0, "re-run: {}", stderr(&out));
    assert!(host.writes().is_empty(), "host writes: {:#?}", host.writes());
    assert!(virt.writes().is_empty(), "vcluster writes: {:#?}", virt.writes());

    // The claim is made: a default StorageClass removed since does not
    // stop the upgrade below (the check is for a claim yet to be made).
    let (c, body) = host.request(
        "DELETE",
        "/apis/storage.k8s.io/v1/storageclasses/local-path",
        "application/json",
        &json!({}),
    );
    assert_eq!(c, 200, "{body}");

    // Upgrade: a new chart version re-applies the vcluster's changed objects only.
    s.write_inventory(&versioned_inventory("0.10.2", port, TREE, false));
    let plan = s.command(&["plan", "-i", "inventory.yaml"]).output().unwrap();
    let shown = cli::stdout(&plan) + &stderr(&plan);
    assert!(
        shown.contains("vcluster/tenant1") && shown.contains("artifacts/vcluster/0.10.2"),
        "{shown}"
    );
    host.reset_log();
    virt.reset_log();
    let out = apply(&s);
    assert_eq!(code(&out), 0, "upgrade: {}", stderr(&out));
    let sts = host.get("/apis/apps/v1/namespaces/vcluster-tenant1/statefulsets/tenant1");
    assert_eq!(container(&sts, "syncer")["image"], "loftsh/vcluster:0.10.2");
    let mut host_writes: Vec<String> = host
        .writes()
        .iter()
        .map(|w| w["path"].as_str().unwrap().to_string())
        .collect();
    // Applied concurrently: the audit log has them in the order they finished.
    host_writes.sort();
    // The chart's version is in the `chart` label of every object but the
    // CoreDNS ConfigMap (and in the syncer's image): exactly those changed.
    let ns = "/api/v1/namespaces/vcluster-tenant1";
    let rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/vcluster-tenant1";
    let mut relabelled = Vec::new();
    for list in [
        format!("{ns}/configmaps"),
        format!("{ns}/serviceaccounts"),
        format!("{ns}/services"),
        "/apis/apps/v1/namespaces/vcluster-tenant1/statefulsets".to_string(),
        format!("{rbac}/roles"),
        format!("{rbac}/rolebindings"),
    ] {
        for o in host.get(&list)["items"].as_array().unwrap() {
            if o["metadata"]["labels"]["chart"] == "vcluster-0.10.2" {
                relabelled.push(format!("{list}/{}", o["metadata"]["name"].as_str().unwrap()));
            }
        }
    }
    relabelled.sort();
    assert!(relabelled.len() >= 2, "{relabelled:?}");
    assert_eq!(host_writes, relabelled, "only the changed objects");
    assert_eq!(
        host.get(&format!("{ns}/configmaps/tenant1-coredns"))["metadata"]["name"],
        "tenant1-coredns",
        "an object the upgrade does not change is there, and was not written"
    );
    assert_eq!(
        host.get("/api/v1/namespaces/vcluster-tenant1/services/tenant1")["spec"]["ports"][0]["nodePort"],
        port,
        "the node port stays"
    );
    assert!(
        virt.writes().is_empty(),
        "nothing inside the vcluster changed: {:#?}",
        virt.writes()
    );

    // Change the tree: acme-dev goes (through its anchor), acme-test comes.
    s.write_inventory(&versioned_inventory("0.10.2", port, TREE_CHANGED, false));
    let out = apply(&s);
    assert_eq!(code(&out), 0, "changed tree: {}", stderr(&out));
    assert_eq!(virt.get("/api/v1/namespaces/acme-dev")["code"], 404);
    assert_eq!(
        virt.get("/apis/hnc.x-k8s.io/v1alpha2/namespaces/acme/subnamespaceanchors/acme-dev")["code"],
        404
    );
    assert_eq!(
        virt.get("/api/v1/namespaces/acme-test")["metadata"]["labels"]["env"],
        "test"
    );
    assert_eq!(
        virt.get("/api/v1/namespaces/acme-prod")["metadata"]["annotations"]["owner"],
        "ops"
    );

    // A namespace that still runs something is not removed unless the tenant allows it.
    let (c, _) = virt.request(
        "POST",
        "/api/v1/namespaces/acme-prod/pods",
        "application/json",
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
    );
    assert_eq!(c, 201);
    s.write_inventory(&versioned_inventory("0.10.2", port, TREE_SMALLER, false));
    let out = apply(&s);
    assert_eq!(code(&out), 1, "must refuse: {}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("acme-prod (1 Pod)") && err.contains("allowDataLoss"),
        "{err}"
    );
    assert_eq!(
        virt.get("/api/v1/namespaces/acme-prod")["metadata"]["name"],
        "acme-prod",
        "kept"
    );
    s.write_inventory(&versioned_inventory("0.10.2", port, TREE_SMALLER, true));
    let out = apply(&s);
    assert_eq!(code(&out), 0, "allowed removal: {}", stderr(&out));
    assert_eq!(virt.get("/api/v1/namespaces/acme-prod")["code"], 404);

    // Teardown: the tree, HNC, then the vcluster and its namespace on the host.
    let out = s
        .command(&["destroy", "--yes", "-i", "inventory.yaml"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "destroy: {}", stderr(&out));
    assert_eq!(virt.get("/api/v1/namespaces/acme")["code"], 404);
    assert_eq!(virt.get("/api/v1/namespaces/hnc-system")["code"], 404);
    assert_eq!(host.get("/api/v1/namespaces/vcluster-tenant1")["code"], 404);
    assert!(!kubeconfig.exists());
    // In the virtual cluster, the tenant tree went before HNC.
    let log = virt.requests();
    let deletes: Vec<&str> = log
        .iter()
        .filter(|r| r["method"] == "DELETE")
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    let anchor = deletes
        .iter()
        .position(|p| p.contains("subnamespaceanchors"))
        .expect("anchor deleted");
    let hnc = deletes
        .iter()
        .position(|p| p.ends_with("/deployments/hnc-controller-manager"))
        .expect("hnc deleted");
    assert!(anchor < hnc, "{deletes:#?}");
}

/// A tenant on a virtual cluster signs in to it through Dex: the vcluster
/// step passes the OIDC flags through the chart to the virtual cluster's
/// K3s and mounts our CA (here Dex's CA, given as the inventory's CA) from
/// a ConfigMap; the virtual cluster's API (a real apiserver started with
/// those flags) accepts the tenant developer's id_token, and the tenant's
/// RoleBinding made inside the virtual cluster grants exactly its role.
#[test]
fn a_tenant_group_signs_in_to_its_virtual_cluster_through_dex() {
    use crate::support::controlplane::ApiserverExtras;
    use crate::support::dex::{self, Dex};
    use crate::support::gitlab::GitlabStandin;
    if controlplane::skip_unless_available() || dex::skip_unless_available() {
        return;
    }
    let s = Scratch::new();
    let gitlab = GitlabStandin::start();
    let dex = Dex::start(&gitlab, "vc.test");
    // Our CA is Dex's: the inventory brings it (pki.ca).
    let dex_dir = dex.ca_path().parent().unwrap().to_path_buf();
    std::fs::copy(dex.ca_path(), s.path().join("ca.crt")).unwrap();
    std::fs::copy(dex_dir.join("signer.key"), s.path().join("ca.key")).unwrap();
    std::fs::set_permissions(s.path().join("ca.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(s.path().join("gitlab-token"), "glpat-unused-unused-01").unwrap();
    std::fs::set_permissions(s.path().join("gitlab-token"), std::fs::Permissions::from_mode(0o600)).unwrap();

    let host = ControlPlane::start();
    let port = port_file::free_node_port();
    // The virtual cluster's API with the flags its K3s gets (checked against
    // the StatefulSet below), the CA where they name it, Dex by its name.
    let oidc_dir = s.path().join("etc-nautes");
    std::fs::create_dir_all(&oidc_dir).unwrap();
    std::fs::copy(dex.ca_path(), oidc_dir.join("nautes-ca.crt")).unwrap();
    std::fs::create_dir_all("/etc/nautes").unwrap();
    let flags = vec![
        "oidc-issuer-url=https://dex.vc.test".to_string(),
        "oidc-client-id=kubernetes".into(),
        "oidc-username-claim=email".into(),
        "oidc-groups-claim=groups".into(),
        "oidc-ca-file=/etc/nautes/nautes-ca.crt".into(),
    ];
    let mut virt = ControlPlane::start_at_with_apiserver(
        port,
        &ApiserverExtras {
            args: flags.clone(),
            hosts: Some(dex.hosts_file()),
            binds: vec![(oidc_dir, "/etc/nautes".into())],
        },
    );
    let inner = virt.kubeconfig().replace(&virt.url(), "https://localhost:8443");
    let _syncer = vcluster_syncer(
        Api::of(&host),
        "vcluster-tenant1",
        "tenant1",
        inner,
        host.service_cidr.clone(),
    );
    let _hnc = hnc_manager(Api::of(&virt));
    virt.start_standin_controllers("webhooks");
    let _provisioner = local_path_provisioner(Api::of(&host));
    host.apply_as_test(&json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete"}));
    let host_kubeconfig = s.path().join("host.kubeconfig");
    std::fs::write(&host_kubeconfig, host.kubeconfig()).unwrap();
    std::fs::set_permissions(&host_kubeconfig, std::fs::Permissions::from_mode(0o600)).unwrap();
    make_bundle(&s);
    let tree = "      - name: acme\n        children:\n          - name: acme-dev\n    groups:\n      - {name: acme-dev, role: developer}\n";
    s.write_inventory(&format!(
        "settings:\n  domain: vc.test\npki:\n  ca:\n    cert: ca.crt\n    key: {{ file: ca.key }}\n{}\
         components:\n  gitlab:\n    placement: external\n    external:\n      url: {}\n      token: {{ file: gitlab-token }}\n    \
         values:\n      group: acme\n  dex: {{}}\n",
        inventory(port, tree, false).replace("    hostCluster: host\n", "    hostCluster: host\n    usage: [host]\n"),
        gitlab.url()
    ));
    let out = s
        .command(&[
            "apply",
            "--yes",
            "-i",
            "inventory.yaml",
            "--only",
            "vcluster/tenant1",
            "tenant/acme/namespaces",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "apply: {}", stderr(&out));

    // The chart gave K3s exactly the flags the virtual API above runs with, and our CA.
    let sts = host.get("/apis/apps/v1/namespaces/vcluster-tenant1/statefulsets/tenant1");
    let k3s = sts["spec"]["template"]["spec"]["containers"][0].clone();
    let line = k3s["args"][1].as_str().unwrap().to_string();
    for f in &flags {
        assert!(line.contains(&format!("--kube-apiserver-arg={f}")), "{f} not in {line}");
    }
    assert!(
        k3s["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/etc/nautes" && m["name"] == "nautes-ca"),
        "{k3s}"
    );
    let cm = host.get("/api/v1/namespaces/vcluster-tenant1/configmaps/nautes-ca");
    assert_eq!(cm["data"]["nautes-ca.crt"].as_str(), Some(dex.ca_pem().as_str()));

    // The tenant's developer signs in to the virtual cluster.
    wait_for_binding(&virt);
    let token = dex.id_token("kubernetes", "alice", &["acme-dev"]);
    let call = |method: &'static str, path: &str, body: Option<serde_json::Value>| {
        let mut c = crate::support::http::Call::new(method, format!("{}{path}", virt.url()))
            .header("Authorization", format!("Bearer {token}"))
            .trust(virt.ca_pem());
        if let Some(b) = body {
            c = c.header("Content-Type", "application/json").body(b.to_string());
        }
        c.send().unwrap().0
    };
    let started = std::time::Instant::now();
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
                 "spec": {"containers": [{"name": "web", "image": "registry.example/web:1"}]}}}});
    let mut status = 0;
    while started.elapsed() < std::time::Duration::from_secs(60) {
        status = call(
            "POST",
            "/apis/apps/v1/namespaces/acme-dev/deployments",
            Some(deployment.clone()),
        );
        if status != 401 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert_eq!(
        status, 201,
        "alice creates a Deployment in acme-dev of the virtual cluster"
    );
    assert_eq!(call("GET", "/api/v1/namespaces/kube-system/secrets", None), 403);
}

fn wait_for_binding(virt: &ControlPlane) {
    let started = std::time::Instant::now();
    while virt.get("/apis/rbac.authorization.k8s.io/v1/namespaces/acme-dev/rolebindings/nautes:developer:acme-dev")
        ["roleRef"]["name"]
        != "edit"
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the binding never reached acme-dev"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
