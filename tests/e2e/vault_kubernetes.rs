//! Vault's Kubernetes auth per tenant, proven end to end on real systems: the
//! installer configures a real OpenBao against a real kube-apiserver; a real
//! ServiceAccount token (TokenRequest) logs in through
//! `auth/kubernetes-<tenant>/login`, OpenBao asks the real TokenReview API
//! (with the reviewer account the installer made, allowed only by its
//! system:auth-delegator binding), and gets exactly the policies the
//! installer meant; other accounts' tokens are refused.

use crate::support::{cli, controlplane, http, vault};

use std::os::unix::fs::PermissionsExt;

use cli::{code, stderr, Scratch};
use controlplane::ControlPlane;
use serde_json::{json, Value};
use vault::OpenBao;

fn inventory(vault_url: &str) -> String {
    format!(
        "artifacts:\n  mode: airgap\n  bundle: bundle\nclusters:\n  - name: host\n    type: external\n    external:\n      kubeconfig: host.kubeconfig\n\
         tenants:\n  - name: acme\n    cluster: host\n    namespaces:\n      - name: acme\n\
         components:\n  vault:\n    placement: external\n    external:\n      url: {vault_url}\n"
    )
}

/// A fresh token of a service account, from the real TokenRequest API.
fn token_of(cp: &ControlPlane, namespace: &str, account: &str) -> String {
    cp.apply_as_test(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}));
    cp.apply_as_test(&json!({"apiVersion": "v1", "kind": "ServiceAccount",
                             "metadata": {"name": account, "namespace": namespace}}));
    let (status, body) = cp.request(
        "POST",
        &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token"),
        "application/json",
        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 600}}),
    );
    assert_eq!(status, 201, "TokenRequest: {body}");
    body["status"]["token"].as_str().unwrap().to_string()
}

fn login(bao: &OpenBao, role: &str, jwt: &str) -> (u16, Value) {
    http::Call::new(
        "POST",
        format!("http://127.0.0.1:{}/v1/auth/kubernetes-acme/login", bao.bao_port),
    )
    .header("Content-Type", "application/json")
    .body(json!({"role": role, "jwt": jwt}).to_string())
    .json()
}

#[test]
fn a_real_service_account_token_logs_in_with_exactly_its_policies_and_others_are_refused() {
    if controlplane::skip_unless_available() || vault::skip_unless_available() {
        return;
    }
    let cp = ControlPlane::start();
    let bao = OpenBao::start();
    let s = Scratch::new();
    let kubeconfig = s.path().join("host.kubeconfig");
    std::fs::write(&kubeconfig, cp.kubeconfig()).unwrap();
    std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The tenant's namespaces come with HNC, from an air-gap bundle.
    let hnc = s.path().join("bundle/hnc/v1.0.0");
    std::fs::create_dir_all(&hnc).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kube/hnc-default.yaml"),
        hnc.join("default.yaml"),
    )
    .unwrap();
    let sealed = s.command(&["bundle", "seal", "--dir", "bundle"]).output().unwrap();
    assert_eq!(code(&sealed), 0, "{}", stderr(&sealed));
    s.write_inventory(&inventory(&bao.url()));
    let out = s.run("apply", &["--yes"]);
    assert_eq!(code(&out), 0, "apply: {}", stderr(&out));

    // The account Nautes' runtime operator runs as, in the tenant cluster.
    let runtime = token_of(&cp, "nautes", "runtime-operator");
    let (status, body) = login(&bao, "runtime-operator", &runtime);
    assert_eq!(status, 200, "login: {body}");
    let mut policies: Vec<&str> = body["auth"]["token_policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    policies.sort();
    assert_eq!(policies, ["default", "runtime-operator"], "{body}");
    assert_eq!(body["auth"]["metadata"]["service_account_namespace"], "nautes");

    // Another account of the same namespace cannot take the operator's role.
    let (status, body) = login(&bao, "runtime-operator", &token_of(&cp, "nautes", "intruder"));
    assert_eq!(status, 403, "{body}");
    // Nor can an account of that name in another namespace.
    let (status, body) = login(
        &bao,
        "runtime-operator",
        &token_of(&cp, "elsewhere", "runtime-operator"),
    );
    assert_eq!(status, 403, "{body}");
    // A valid account with a role that is not its own.
    let (status, body) = login(&bao, "repo-operator", &runtime);
    assert_eq!(status, 403, "{body}");
    // A token from no cluster at all: TokenReview says it is not authenticated.
    let forged = {
        let mut parts: Vec<String> = runtime.split('.').map(str::to_string).collect();
        parts[2] = "c2lnbmF0dXJl".into();
        parts.join(".")
    };
    let (status, body) = login(&bao, "runtime-operator", &forged);
    assert_eq!(status, 403, "{body}");

    // A re-run writes nothing to OpenBao and nothing to the cluster.
    bao.reset_log();
    cp.reset_log();
    let out = s.run("apply", &["--yes"]);
    assert_eq!(code(&out), 0, "re-run: {}", stderr(&out));
    assert!(
        bao.writes().is_empty(),
        "OpenBao writes on a re-run: {:?}",
        bao.writes()
    );
    assert!(cp.writes().is_empty(), "cluster writes on a re-run: {:#?}", cp.writes());
}
