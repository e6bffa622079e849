//! The Kubernetes API stand-in keeps the real API's contract: these checks
//! fail if it starts accepting what a real server refuses.

#[path = "support/kube_api.rs"]
mod kube_api;

use serde_json::json;

const APPLY: &str = "application/apply-patch+yaml";

fn crd() -> serde_json::Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.example.io"},
           "spec": {"group": "example.io", "scope": "Namespaced",
                    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                    "versions": [{"name": "v1", "served": true, "storage": true}]}})
}

#[test]
fn auth_discovery_and_custom_kinds_only_after_the_crd_is_established() {
    let api = kube_api::KubeApiStandin::start();
    let mut wrong = api.token.clone();
    wrong.push('x');
    let unauth = std::process::Command::new("python3")
        .args(["-c", "import sys,urllib.request,urllib.error\ntry: urllib.request.urlopen(urllib.request.Request(sys.argv[1],headers={'Authorization':'Bearer '+sys.argv[2]}))\nexcept urllib.error.HTTPError as e: print(e.code)", &format!("{}/api/v1/nodes", api.url()), &wrong])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&unauth.stdout).trim(), "401");
    assert_eq!(
        api.get("/apis/apps/v1")["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kind"] == "Deployment")
            .count(),
        1
    );

    let (code, _) = api.request(
        "POST",
        "/api/v1/namespaces",
        "application/json",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}),
    );
    assert_eq!(code, 201);
    let widget =
        json!({"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}});
    let path = "/apis/example.io/v1/namespaces/demo/widgets/w?fieldManager=t";
    assert_eq!(api.request("PATCH", path, APPLY, &widget).0, 404, "no CRD yet");
    let (code, _) = api.request(
        "PATCH",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.io?fieldManager=t",
        APPLY,
        &crd(),
    );
    assert_eq!(code, 201);
    let start = std::time::Instant::now();
    while api.request("PATCH", path, APPLY, &widget).0 == 404 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the CRD never became established"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        api.get("/apis").to_string().contains("example.io/v1"),
        "served once established"
    );
    assert_eq!(
        api.request(
            "PATCH",
            "/api/v1/namespaces/nope/configmaps/c?fieldManager=t",
            APPLY,
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
        )
        .0,
        404,
        "namespace must exist"
    );
}

#[test]
fn server_side_apply_owns_fields_per_manager() {
    let api = kube_api::KubeApiStandin::start();
    api.request(
        "POST",
        "/api/v1/namespaces",
        "application/json",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}}),
    );
    let cm = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": v}});
    let path = |m: &str, force: bool| format!("/api/v1/namespaces/ns/configmaps/c?fieldManager={m}&force={force}");
    assert_eq!(
        api.request("PATCH", "/api/v1/namespaces/ns/configmaps/c", APPLY, &cm("a"))
            .0,
        400,
        "fieldManager is required"
    );
    assert_eq!(
        api.request("PATCH", &path("a", false), "application/json-patch+json", &cm("a"))
            .0,
        415
    );
    let (code, first) = api.request("PATCH", &path("a", false), APPLY, &cm("1"));
    assert_eq!(code, 201);
    let (_, again) = api.request("PATCH", &path("a", false), APPLY, &cm("1"));
    assert_eq!(
        again["metadata"]["resourceVersion"], first["metadata"]["resourceVersion"],
        "a no-op apply writes nothing"
    );
    let (code, conflict) = api.request("PATCH", &path("b", false), APPLY, &cm("2"));
    assert_eq!(code, 409);
    assert!(
        conflict["message"]
            .as_str()
            .unwrap()
            .contains(r#"conflict with "a": .data.k"#),
        "{conflict}"
    );
    let (code, forced) = api.request("PATCH", &path("b", true), APPLY, &cm("2"));
    assert_eq!((code, forced["data"]["k"].as_str()), (200, Some("2")));
    // Manager a lost the field; when b stops applying it, it is gone.
    let (_, dropped) = api.request(
        "PATCH",
        &path("b", false),
        APPLY,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"other": "x"}}),
    );
    assert!(dropped["data"].get("k").is_none(), "{dropped}");
    let stale =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "resourceVersion": "1"}, "data": {}});
    assert_eq!(
        api.request("PUT", "/api/v1/namespaces/ns/configmaps/c", "application/json", &stale)
            .0,
        409,
        "optimistic concurrency"
    );
}

#[test]
fn the_controller_rolls_out_workloads_unless_told_not_to() {
    let api = kube_api::KubeApiStandin::start();
    api.request(
        "POST",
        "/api/v1/namespaces",
        "application/json",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}}),
    );
    let dep = |name: &str| json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": {"replicas": 2}});
    api.request(
        "POST",
        "/_standin/never-ready",
        "application/json",
        &json!({"kind": "Deployment", "name": "stuck"}),
    );
    for n in ["ok", "stuck"] {
        assert_eq!(
            api.request(
                "PATCH",
                &format!("/apis/apps/v1/namespaces/ns/deployments/{n}?fieldManager=t"),
                APPLY,
                &dep(n)
            )
            .0,
            201
        );
    }
    let start = std::time::Instant::now();
    loop {
        let ok = api.get("/apis/apps/v1/namespaces/ns/deployments/ok");
        if ok["status"]["readyReplicas"] == 2 && ok["status"]["observedGeneration"] == ok["metadata"]["generation"] {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "never rolled out: {ok}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(api.get("/apis/apps/v1/namespaces/ns/deployments/stuck")["status"]
        .get("readyReplicas")
        .is_none());
}

/// GET `path` on the stand-in over a raw connection and read until it closes
/// (a watch ends at its timeoutSeconds): status line and body.
fn raw_get(port: u16, token: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.lines().next().unwrap_or("").to_string(), body.to_string())
}

#[test]
fn watch_streams_changes_after_a_resource_version_and_refuses_unserved_kinds() {
    let api = kube_api::KubeApiStandin::start();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "w"}});
    assert_eq!(
        api.request("POST", "/api/v1/namespaces", "application/json", &ns).0,
        201
    );
    let cm = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": v}});
    let path = "/api/v1/namespaces/w/configmaps/c?fieldManager=t";
    let (_, created) = api.request("PATCH", path, APPLY, &cm("1"));
    let rv = created["metadata"]["resourceVersion"].as_str().unwrap().to_string();

    let (port, token) = (api.port, api.token.clone());
    let watcher = std::thread::spawn(move || {
        raw_get(
            port,
            &token,
            &format!("/api/v1/namespaces/w/configmaps?watch=true&resourceVersion={rv}&fieldSelector=metadata.name%3Dc&timeoutSeconds=2"),
        )
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    // A request made while the watch is open is served, and shows up in it.
    assert_eq!(api.request("PATCH", path, APPLY, &cm("2")).0, 200);
    let (status, body) = watcher.join().unwrap();
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("\"MODIFIED\"") && body.contains("\"k\": \"2\""), "{body}");
    assert!(
        !body.contains("\"k\": \"1\""),
        "events up to the given resourceVersion are not replayed: {body}"
    );

    let (status, _) = raw_get(
        api.port,
        &api.token,
        "/apis/example.io/v1/widgets?watch=true&timeoutSeconds=1",
    );
    assert!(status.contains("404"), "{status}");
}

const TOKEN_TYPE: &str = "kubernetes.io/service-account-token";

/// Poll GET `path` until `done` holds for its body (10 s at most); the body.
fn wait_until(
    api: &kube_api::KubeApiStandin,
    path: &str,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let body = api.get(path);
        if done(&body) {
            return body;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "{what}: {body}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn namespace(api: &kube_api::KubeApiStandin, name: &str) {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    assert_eq!(
        api.request("POST", "/api/v1/namespaces", "application/json", &ns).0,
        201
    );
}

/// Server-side apply ServiceAccount `name` in `ns`; its uid.
fn service_account(api: &kube_api::KubeApiStandin, ns: &str, name: &str) -> String {
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}});
    let (code, body) = api.request(
        "PATCH",
        &format!("/api/v1/namespaces/{ns}/serviceaccounts/{name}?fieldManager=nautes"),
        APPLY,
        &sa,
    );
    assert_eq!(code, 201, "{body}");
    body["metadata"]["uid"].as_str().unwrap().to_string()
}

/// A token Secret as a client applies it: type, the service account annotation, nothing else.
fn token_secret(name: &str, sa: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": TOKEN_TYPE,
           "metadata": {"name": name, "annotations": {"kubernetes.io/service-account.name": sa}}})
}

fn b64(text: &serde_json::Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.as_str().unwrap_or_else(|| panic!("not a string: {text}")))
        .unwrap()
}

fn jwt_part(part: &str) -> serde_json::Value {
    use base64::Engine;
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[test]
fn the_token_controller_fills_a_token_secret_for_its_service_account() {
    let dir = tempfile::tempdir().unwrap();
    let ca = "-----BEGIN CERTIFICATE-----\nc3RhbmQtaW4gdGVzdCBDQQ==\n-----END CERTIFICATE-----\n";
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca).unwrap();
    let api = kube_api::KubeApiStandin::start_with(&["--ca-file", ca_file.to_str().unwrap()]);
    namespace(&api, "apps");
    let uid = service_account(&api, "apps", "deployer");
    let path = "/api/v1/namespaces/apps/secrets/deployer-token";
    let apply = format!("{path}?fieldManager=nautes");
    let (code, created) = api.request("PATCH", &apply, APPLY, &token_secret("deployer-token", "deployer"));
    assert_eq!(code, 201, "{created}");
    assert!(
        created.get("data").is_none(),
        "the controller fills it later: {created}"
    );
    let rv = created["metadata"]["resourceVersion"].as_str().unwrap().to_string();

    let secret = wait_until(&api, path, "the token was never filled", |s| {
        s["data"]["token"].is_string()
    });
    let token = String::from_utf8(b64(&secret["data"]["token"])).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT: {token}");
    let header = jwt_part(parts[0]);
    assert_eq!(header["alg"], "RS256", "{header}");
    assert!(header["kid"].as_str().is_some_and(|k| !k.is_empty()), "{header}");
    let claims = jwt_part(parts[1]);
    let sa = "kubernetes.io/serviceaccount/";
    assert_eq!(claims["iss"], "kubernetes/serviceaccount", "{claims}");
    assert_eq!(claims["sub"], "system:serviceaccount:apps:deployer", "{claims}");
    assert_eq!(claims[format!("{sa}namespace")], "apps", "{claims}");
    assert_eq!(claims[format!("{sa}secret.name")], "deployer-token", "{claims}");
    assert_eq!(claims[format!("{sa}service-account.name")], "deployer", "{claims}");
    assert_eq!(claims[format!("{sa}service-account.uid")], uid.as_str(), "{claims}");
    assert!(!parts[2].is_empty(), "a signature");
    assert_eq!(b64(&secret["data"]["ca.crt"]), ca.as_bytes(), "ca.crt is the --ca-file");
    assert_eq!(b64(&secret["data"]["namespace"]), b"apps");
    let annotations = &secret["metadata"]["annotations"];
    assert_eq!(annotations["kubernetes.io/service-account.uid"], uid.as_str());
    assert_eq!(annotations["kubernetes.io/service-account.name"], "deployer");

    // The fill was one controller write, seen by watchers.
    let (status, body) = raw_get(
        api.port,
        &api.token,
        &format!("/api/v1/namespaces/apps/secrets?watch=true&resourceVersion={rv}&timeoutSeconds=1"),
    );
    assert!(status.contains("200"), "{status}");
    let events: Vec<serde_json::Value> = body
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
        .filter(|e| e.is_object()) // not the chunk sizes
        .collect();
    assert_eq!(events.len(), 1, "{body}");
    assert_eq!(events[0]["type"], "MODIFIED");
    assert_eq!(events[0]["object"]["data"]["token"], secret["data"]["token"]);

    // The client applies again without data (also with an empty data map):
    // the controller's keys are not the client's to drop.
    let mut relabelled = token_secret("deployer-token", "deployer");
    relabelled["metadata"]["labels"] = json!({"app": "nautes"});
    let (code, after) = api.request("PATCH", &apply, APPLY, &relabelled);
    assert_eq!(code, 200, "{after}");
    assert_eq!(after["data"], secret["data"], "an apply without data keeps the token");
    relabelled["data"] = json!({});
    let (code, after) = api.request("PATCH", &apply, APPLY, &relabelled);
    assert_eq!(code, 200, "{after}");
    assert_eq!(after["data"], secret["data"], "an empty data map keeps the token");
    std::thread::sleep(std::time::Duration::from_millis(400));
    let settled = api.get(path);
    assert_eq!(settled["data"], secret["data"], "the token is not minted again");
    assert_eq!(
        settled["metadata"]["resourceVersion"], after["metadata"]["resourceVersion"],
        "nothing left for the controller to write"
    );
}

#[test]
fn the_token_controller_keeps_a_client_token_and_owns_the_ca() {
    let api = kube_api::KubeApiStandin::start();
    namespace(&api, "apps");
    service_account(&api, "apps", "deployer");
    let path = "/api/v1/namespaces/apps/secrets/t";
    let apply = format!("{path}?fieldManager=nautes");
    let mut own = token_secret("t", "deployer");
    // "client-token" and "bogus", base64.
    own["data"] = json!({"token": "Y2xpZW50LXRva2Vu", "ca.crt": "Ym9ndXM="});
    assert_eq!(api.request("PATCH", &apply, APPLY, &own).0, 201);
    let secret = wait_until(&api, path, "never filled", |s| s["data"]["namespace"].is_string());
    assert_eq!(
        b64(&secret["data"]["token"]),
        b"client-token",
        "a token already there is kept"
    );
    let pem = String::from_utf8(b64(&secret["data"]["ca.crt"])).unwrap();
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"), "{pem}");
    assert!(
        String::from_utf8_lossy(&b64(&json!(der))).contains("STAND-IN cluster CA"),
        "the placeholder CA says what it is: {pem}"
    );
    // ca.crt is now the controller's: applying the old value conflicts.
    let (code, conflict) = api.request("PATCH", &apply, APPLY, &own);
    assert_eq!(code, 409, "{conflict}");
    assert!(
        conflict["message"]
            .as_str()
            .unwrap()
            .contains(r#"conflict with "kube-controller-manager": .data.ca.crt"#),
        "{conflict}"
    );
    assert!(
        secret["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["manager"] == "kube-controller-manager" && m["operation"] == "Update"),
        "{secret}"
    );
}

#[test]
fn the_token_controller_deletes_token_secrets_without_their_service_account() {
    let api = kube_api::KubeApiStandin::start();
    namespace(&api, "apps");
    let secrets = "/api/v1/namespaces/apps/secrets";
    let apply = |name: &str, sa: &str| {
        let (code, body) = api.request(
            "PATCH",
            &format!("{secrets}/{name}?fieldManager=nautes"),
            APPLY,
            &token_secret(name, sa),
        );
        assert_eq!(code, 201, "{body}");
        body
    };
    let gone = |name: &str, what: &str| {
        wait_until(&api, &format!("{secrets}/{name}"), what, |s| s["code"] == 404);
    };

    // No ServiceAccount: deleted, and a ServiceAccount made afterwards does not bring it back.
    apply("early", "late");
    gone("early", "a token Secret without its ServiceAccount stays");
    service_account(&api, "apps", "late");
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert_eq!(api.get(&format!("{secrets}/early"))["code"], 404);

    // Deleting the ServiceAccount deletes its filled token Secret, with a DELETED event.
    let created = apply("late-token", "late");
    wait_until(&api, &format!("{secrets}/late-token"), "never filled", |s| {
        s["data"]["token"].is_string()
    });
    assert_eq!(
        api.request(
            "DELETE",
            "/api/v1/namespaces/apps/serviceaccounts/late",
            "application/json",
            &json!(null)
        )
        .0,
        200
    );
    gone("late-token", "the Secret outlived its ServiceAccount");
    let rv = created["metadata"]["resourceVersion"].as_str().unwrap();
    let (_, body) = raw_get(
        api.port,
        &api.token,
        &format!("{secrets}?watch=true&resourceVersion={rv}&fieldSelector=metadata.name%3Dlate-token&timeoutSeconds=1"),
    );
    assert!(body.contains(r#""type": "DELETED""#), "{body}");

    // A Secret naming another incarnation (uid) of the ServiceAccount is deleted too.
    service_account(&api, "apps", "again");
    let mut stale = token_secret("stale", "again");
    stale["metadata"]["annotations"]["kubernetes.io/service-account.uid"] = json!("uid-of-an-older-one");
    assert_eq!(
        api.request("PATCH", &format!("{secrets}/stale?fieldManager=nautes"), APPLY, &stale)
            .0,
        201
    );
    gone("stale", "a Secret for another uid stays");
}

#[test]
fn rbac_and_service_accounts_are_served_and_token_secrets_validated() {
    let api = kube_api::KubeApiStandin::start();
    let rbac = api.get("/apis/rbac.authorization.k8s.io/v1")["resources"].clone();
    let served = |list: &serde_json::Value, name: &str, namespaced: bool| {
        list.as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == name && r["namespaced"] == namespaced)
    };
    for (name, namespaced) in [
        ("clusterroles", false),
        ("clusterrolebindings", false),
        ("roles", true),
        ("rolebindings", true),
    ] {
        assert!(served(&rbac, name, namespaced), "{name}: {rbac}");
    }
    assert!(served(&api.get("/api/v1")["resources"], "serviceaccounts", true));

    namespace(&api, "apps");
    service_account(&api, "apps", "deployer");
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r"},
                      "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "b"},
                         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "r"},
                         "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": "apps"}]});
    let base = "/apis/rbac.authorization.k8s.io/v1";
    assert_eq!(
        api.request("PATCH", &format!("{base}/clusterroles/r?fieldManager=t"), APPLY, &role)
            .0,
        201
    );
    assert_eq!(
        api.request(
            "PATCH",
            &format!("{base}/clusterrolebindings/b?fieldManager=t"),
            APPLY,
            &binding
        )
        .0,
        201
    );
    assert_eq!(
        api.request(
            "PATCH",
            &format!("{base}/namespaces/apps/clusterrolebindings/b?fieldManager=t"),
            APPLY,
            &binding
        )
        .0,
        404,
        "cluster-scoped"
    );
    assert_eq!(
        api.get(&format!("{base}/clusterrolebindings/b"))["subjects"][0]["name"],
        "deployer"
    );
    assert_eq!(
        api.request(
            "DELETE",
            &format!("{base}/clusterrolebindings/b"),
            "application/json",
            &json!(null)
        )
        .0,
        200
    );
    assert_eq!(api.get(&format!("{base}/clusterrolebindings/b"))["code"], 404);

    let unnamed = json!({"apiVersion": "v1", "kind": "Secret", "type": TOKEN_TYPE, "metadata": {"name": "x"}});
    let (code, invalid) = api.request("POST", "/api/v1/namespaces/apps/secrets", "application/json", &unnamed);
    assert_eq!(code, 422, "{invalid}");
    assert!(
        invalid["message"]
            .as_str()
            .unwrap()
            .contains("kubernetes.io/service-account.name"),
        "{invalid}"
    );
    let path = "/api/v1/namespaces/apps/secrets/t?fieldManager=t";
    assert_eq!(api.request("PATCH", path, APPLY, &token_secret("t", "deployer")).0, 201);
    let mut opaque = token_secret("t", "deployer");
    opaque["type"] = json!("Opaque");
    let (code, immutable) = api.request("PATCH", path, APPLY, &opaque);
    assert_eq!(code, 422, "the type cannot change: {immutable}");
}
