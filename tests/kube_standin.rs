//! The Kubernetes API stand-in keeps the real API's contract: these checks
//! fail if it starts accepting what a real server refuses.

#[path = "support/kube_api.rs"]
mod kube_api;
#[path = "support/port_file.rs"]
mod port_file;

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

fn b64enc(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Server-side apply `body` at `path` (a `?fieldManager=` is added); the object.
fn apply(api: &kube_api::KubeApiStandin, path: &str, body: &serde_json::Value) -> serde_json::Value {
    let (code, out) = api.request("PATCH", &format!("{path}?fieldManager=nautes"), APPLY, body);
    assert!(code == 200 || code == 201, "{path}: {code} {out}");
    out
}

/// Apply the CRD for `kind` and wait until its kind is served.
fn served_crd(api: &kube_api::KubeApiStandin, group: &str, version: &str, kind: &str, namespaced: bool) {
    let plural = format!("{}s", kind.to_lowercase());
    let scope = if namespaced { "Namespaced" } else { "Cluster" };
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                     "metadata": {"name": format!("{plural}.{group}")},
                     "spec": {"group": group, "scope": scope,
                              "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind},
                              "versions": [{"name": version, "served": true, "storage": true}]}});
    apply(
        api,
        &format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{plural}.{group}"),
        &crd,
    );
    wait_until(
        api,
        &format!("/apis/{group}/{version}"),
        "the CRD was never established",
        |d| {
            d["resources"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["name"] == plural.as_str()))
        },
    );
}

fn managed_by<'a>(obj: &'a serde_json::Value, manager: &str) -> Option<&'a serde_json::Value> {
    obj["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|m| m["manager"] == manager)
}

/// A CA key pair Secret as cert-manager's CA issuer reads it.
fn tls_secret(name: &str, cert_pem: &str, key_pem: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"name": name},
           "data": {"tls.crt": b64enc(cert_pem), "tls.key": b64enc(key_pem)}})
}

#[test]
fn cert_manager_verifies_a_ca_issuer_only_once_it_runs_and_its_secret_is_there() {
    use nautes_install::pki::{Ca, LeafRequest, Usage};
    let api = kube_api::KubeApiStandin::start_with(&["--crd-delay", "0"]);
    namespace(&api, "cert-manager");
    namespace(&api, "apps");
    served_crd(&api, "cert-manager.io", "v1", "ClusterIssuer", false);
    served_crd(&api, "cert-manager.io", "v1", "Issuer", true);
    let (ca, ca_pem) = Ca::generate("stand-in test CA", std::time::Duration::from_secs(3600)).unwrap();
    let leaf = ca
        .issue(
            &LeafRequest {
                common_name: "leaf".into(),
                sans: vec!["leaf.example".into()],
                usage: Usage::Server,
            },
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
    let ca_secret = tls_secret("nautes-ca", &ca_pem.cert_pem, ca_pem.key_pem.expose());
    // In the wrong namespace for a ClusterIssuer: it reads the cluster resource namespace.
    apply(&api, "/api/v1/namespaces/apps/secrets/nautes-ca", &ca_secret);

    let cluster_issuer = "/apis/cert-manager.io/v1/clusterissuers/nautes-ca";
    let issuer = "/apis/cert-manager.io/v1/namespaces/apps/issuers/local";
    let acme = "/apis/cert-manager.io/v1/namespaces/apps/issuers/acme";
    let created = apply(
        &api,
        cluster_issuer,
        &json!({"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer", "metadata": {"name": "nautes-ca"},
                "spec": {"ca": {"secretName": "nautes-ca"}}}),
    );
    // A leaf certificate is no CA.
    apply(
        &api,
        "/api/v1/namespaces/apps/secrets/local-ca",
        &tls_secret("local-ca", &leaf.cert_pem, leaf.key_pem.expose()),
    );
    apply(
        &api,
        issuer,
        &json!({"apiVersion": "cert-manager.io/v1", "kind": "Issuer", "metadata": {"name": "local"},
                "spec": {"ca": {"secretName": "local-ca"}}}),
    );
    apply(
        &api,
        acme,
        &json!({"apiVersion": "cert-manager.io/v1", "kind": "Issuer", "metadata": {"name": "acme"},
                "spec": {"acme": {"server": "https://acme.example/directory", "privateKeySecretRef": {"name": "k"}}}}),
    );

    // No cert-manager yet, then one that is not Available yet: nobody writes a status.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(api.get(cluster_issuer).get("status").is_none(), "no cert-manager runs");
    api.control(
        "/_standin/slow-ready",
        &json!({"kind": "Deployment", "name": "cert-manager", "seconds": 2.0}),
    );
    apply(
        &api,
        "/apis/apps/v1/namespaces/cert-manager/deployments/cert-manager",
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "cert-manager"}, "spec": {"replicas": 1}}),
    );
    std::thread::sleep(std::time::Duration::from_millis(600));
    let deployment = api.get("/apis/apps/v1/namespaces/cert-manager/deployments/cert-manager");
    assert_eq!(
        deployment["status"]["conditions"][0]["status"], "False",
        "still starting: {deployment}"
    );
    assert!(
        api.get(cluster_issuer).get("status").is_none(),
        "cert-manager is not Available yet"
    );

    let not_found = wait_until(&api, cluster_issuer, "the ClusterIssuer got no status", |i| {
        i["status"]["conditions"][0]["type"] == "Ready"
    });
    let ready = &not_found["status"]["conditions"][0];
    assert_eq!(ready["status"], "False", "{not_found}");
    assert_eq!(ready["reason"], "ErrGetKeyPair", "{not_found}");
    assert_eq!(
        ready["message"],
        r#"Error getting keypair for CA issuer: secrets "nautes-ca" not found"#
    );
    assert_eq!(ready["observedGeneration"], 1);
    assert!(ready["lastTransitionTime"].is_string(), "{not_found}");
    assert_eq!(not_found["metadata"]["generation"], created["metadata"]["generation"]);
    let manager = managed_by(&not_found, "cert-manager-clusterissuers").expect("the controller's fields");
    assert_eq!(
        (manager["operation"].as_str(), manager["subresource"].as_str()),
        (Some("Update"), Some("status"))
    );
    let local = wait_until(&api, issuer, "the Issuer got no status", |i| {
        i["status"]["conditions"][0]["type"] == "Ready"
    });
    assert_eq!(
        local["status"]["conditions"][0]["reason"], "ErrInvalidKeyPair",
        "{local}"
    );
    assert_eq!(
        local["status"]["conditions"][0]["message"],
        "Error getting keypair for CA issuer: certificate is not a CA"
    );
    let other = wait_until(&api, acme, "the ACME issuer got no status", |i| {
        i["status"]["conditions"][0]["type"] == "Ready"
    });
    assert_eq!(
        (
            other["status"]["conditions"][0]["status"].as_str(),
            other["status"]["conditions"][0]["reason"].as_str()
        ),
        (Some("False"), Some("StandInNotModelled")),
        "{other}"
    );

    // The Secret appears: Ready, in one MODIFIED event, no new generation.
    let rv = not_found["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    apply(&api, "/api/v1/namespaces/cert-manager/secrets/nautes-ca", &ca_secret);
    let verified = wait_until(&api, cluster_issuer, "never Ready", |i| {
        i["status"]["conditions"][0]["status"] == "True"
    });
    let ready = &verified["status"]["conditions"][0];
    assert_eq!(
        (ready["reason"].as_str(), ready["message"].as_str()),
        (Some("KeyPairVerified"), Some("Signing CA verified"))
    );
    assert_eq!(
        verified["metadata"]["generation"], 1,
        "a status write is no new generation"
    );
    let (_, body) = raw_get(
        api.port,
        &api.token,
        &format!("/apis/cert-manager.io/v1/clusterissuers?watch=true&resourceVersion={rv}&timeoutSeconds=1"),
    );
    let events: Vec<serde_json::Value> = body
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
        .filter(|e| e.is_object())
        .collect();
    assert_eq!(events.len(), 1, "{body}");
    assert_eq!(events[0]["type"], "MODIFIED");

    // The Issuer's Secret changes to a CA: re-verified.
    apply(
        &api,
        "/api/v1/namespaces/apps/secrets/local-ca",
        &tls_secret("local-ca", &ca_pem.cert_pem, ca_pem.key_pem.expose()),
    );
    wait_until(&api, issuer, "a changed Secret was not re-verified", |i| {
        i["status"]["conditions"][0]["reason"] == "KeyPairVerified"
    });
    // Settled: nothing more to write.
    let before = api.get(cluster_issuer)["metadata"]["resourceVersion"].clone();
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert_eq!(api.get(cluster_issuer)["metadata"]["resourceVersion"], before);
}

const REPO: &str = "https://git.example.com/nautes/platform.git";

/// Namespace argocd with Argo CD's CRDs.
fn argocd_crds(api: &kube_api::KubeApiStandin) {
    namespace(api, "argocd");
    served_crd(api, "argoproj.io", "v1alpha1", "Application", true);
    served_crd(api, "argoproj.io", "v1alpha1", "AppProject", true);
}

/// Namespace argocd with Argo CD's CRDs and its application controller (ready after --ready-delay).
fn argocd(api: &kube_api::KubeApiStandin) {
    argocd_crds(api);
    argocd_controller(api);
}

fn argocd_controller(api: &kube_api::KubeApiStandin) {
    apply(
        api,
        "/apis/apps/v1/namespaces/argocd/statefulsets/argocd-application-controller",
        &json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "argocd-application-controller"},
                "spec": {"replicas": 1}}),
    );
}

fn application(name: &str, project: &str) -> serde_json::Value {
    json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": name},
           "spec": {"project": project,
                    "source": {"repoURL": REPO, "targetRevision": "main", "path": "deploy"},
                    "destination": {"server": "https://kubernetes.default.svc", "namespace": "nautes"}}})
}

/// Register `url` with Argo CD as repository Secret `name` in namespace argocd.
fn repository(api: &kube_api::KubeApiStandin, name: &str, url: &str) {
    apply(
        api,
        &format!("/api/v1/namespaces/argocd/secrets/{name}"),
        &json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": name, "labels": {"argocd.argoproj.io/secret-type": "repository"}},
                "data": {"url": b64enc(url), "type": b64enc("git")}}),
    );
}

const APPS: &str = "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications";

#[test]
fn argocd_reports_a_comparison_error_until_the_repository_is_registered() {
    let api = kube_api::KubeApiStandin::start_with(&["--crd-delay", "0"]);
    argocd_crds(&api);
    let path = format!("{APPS}/platform");
    let created = apply(&api, &path, &application("platform", "default"));
    // A Secret of another type, and one for another repository, register nothing.
    apply(
        &api,
        "/api/v1/namespaces/argocd/secrets/creds",
        &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds",
                "labels": {"argocd.argoproj.io/secret-type": "repo-creds"}}, "data": {"url": b64enc(REPO)}}),
    );
    repository(&api, "other", "https://git.example.com/nautes/other.git");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        api.get(&path).get("status").is_none(),
        "no application controller runs yet"
    );

    argocd_controller(&api);
    let failing = wait_until(&api, &path, "no status", |a| a["status"]["sync"]["status"].is_string());
    assert_eq!(failing["status"]["sync"]["status"], "Unknown", "{failing}");
    assert_eq!(failing["status"]["health"]["status"], "Unknown", "{failing}");
    let conditions = failing["status"]["conditions"].as_array().unwrap();
    assert_eq!(conditions.len(), 1, "{failing}");
    assert_eq!(conditions[0]["type"], "ComparisonError");
    assert_eq!(
        conditions[0]["message"],
        "rpc error: code = Unknown desc = repository not accessible: repository not found"
    );
    assert!(failing["status"].get("operationState").is_none(), "{failing}");
    let manager = managed_by(&failing, "argocd-application-controller").expect("the controller's fields");
    assert_eq!(manager["operation"], "Update");
    assert!(
        failing["metadata"]["generation"].as_i64() > created["metadata"]["generation"].as_i64(),
        "no status subresource: a status write is a new generation"
    );

    // Registered (the URL as Argo CD normalises it: case, no .git, a trailing slash).
    repository(&api, "platform-repo", "https://GIT.example.com/nautes/platform/");
    let synced = wait_until(&api, &path, "never Synced", |a| {
        a["status"]["sync"]["status"] == "Synced"
    });
    let status = &synced["status"];
    assert_eq!(status["health"]["status"], "Healthy", "{synced}");
    assert!(status.get("conditions").is_none(), "{synced}");
    assert_eq!(status["operationState"]["phase"], "Succeeded", "{synced}");
    let revision = status["sync"]["revision"].as_str().unwrap();
    assert!(
        revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit()),
        "{revision}"
    );
    assert_eq!(status["sync"]["comparedTo"]["source"]["repoURL"], REPO);
    // Settled: nothing more to write.
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert_eq!(
        api.get(&path)["metadata"]["resourceVersion"],
        synced["metadata"]["resourceVersion"],
        "no rewrites once synced"
    );

    // Another targetRevision is another commit; the repository going away is an error again.
    let mut moved = application("platform", "default");
    moved["spec"]["source"]["targetRevision"] = json!("v2");
    apply(&api, &path, &moved);
    let resynced = wait_until(&api, &path, "the new revision was never compared", |a| {
        a["status"]["sync"]["comparedTo"]["source"]["targetRevision"] == "v2"
    });
    assert_ne!(resynced["status"]["sync"]["revision"].as_str(), Some(revision));
    assert_eq!(
        api.request(
            "DELETE",
            "/api/v1/namespaces/argocd/secrets/platform-repo",
            "application/json",
            &json!(null)
        )
        .0,
        200
    );
    let lost = wait_until(&api, &path, "the lost repository went unnoticed", |a| {
        a["status"]["sync"]["status"] == "Unknown"
    });
    assert_eq!(lost["status"]["conditions"][0]["type"], "ComparisonError", "{lost}");
}

#[test]
fn argocd_health_can_be_forced_by_the_test_hook_annotation() {
    let api = kube_api::KubeApiStandin::start_with(&["--crd-delay", "0"]);
    argocd(&api);
    repository(&api, "repo", REPO);
    let path = format!("{APPS}/broken");
    let mut app = application("broken", "default");
    app["metadata"]["annotations"] = json!({"standin.nautes.io/health": "Degraded"});
    apply(&api, &path, &app);
    let degraded = wait_until(&api, &path, "never compared", |a| {
        a["status"]["sync"]["status"].is_string()
    });
    assert_eq!(degraded["status"]["sync"]["status"], "Synced", "{degraded}");
    assert_eq!(degraded["status"]["health"]["status"], "Degraded", "{degraded}");
    assert_eq!(degraded["status"]["health"]["message"], "stand-in: forced Degraded");

    // Without the annotation it is healthy again.
    apply(&api, &path, &application("broken", "default"));
    let healthy = wait_until(&api, &path, "still Degraded", |a| {
        a["status"]["health"]["status"] == "Healthy"
    });
    assert!(healthy["status"]["health"].get("message").is_none(), "{healthy}");
}

#[test]
fn argocd_refuses_an_application_whose_project_does_not_exist() {
    let api = kube_api::KubeApiStandin::start_with(&["--crd-delay", "0"]);
    argocd(&api);
    namespace(&api, "elsewhere");
    repository(&api, "repo", REPO);
    let project = |ns: &str| {
        apply(
            &api,
            &format!("/apis/argoproj.io/v1alpha1/namespaces/{ns}/appprojects/nautes"),
            &json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject", "metadata": {"name": "nautes"},
                    "spec": {"sourceRepos": ["*"], "destinations": [{"server": "*", "namespace": "*"}]}}),
        );
    };
    // Argo CD only sees AppProjects in its own namespace.
    project("elsewhere");
    let path = format!("{APPS}/platform");
    apply(&api, &path, &application("platform", "nautes"));
    let invalid = wait_until(&api, &path, "never compared", |a| {
        a["status"]["sync"]["status"].is_string()
    });
    assert_eq!(invalid["status"]["sync"]["status"], "Unknown", "{invalid}");
    assert_eq!(invalid["status"]["health"]["status"], "Unknown", "{invalid}");
    assert_eq!(invalid["status"]["conditions"][0]["type"], "InvalidSpecError");
    assert_eq!(
        invalid["status"]["conditions"][0]["message"],
        "Application referencing project nautes which does not exist"
    );

    project("argocd");
    let synced = wait_until(&api, &path, "the new AppProject went unnoticed", |a| {
        a["status"]["sync"]["status"] == "Synced"
    });
    assert_eq!(synced["status"]["health"]["status"], "Healthy", "{synced}");
    assert!(synced["status"].get("conditions").is_none(), "{synced}");
}

/// (HTTP status, body) of a GET.
fn get_code(api: &kube_api::KubeApiStandin, path: &str) -> (u16, serde_json::Value) {
    api.request("GET", path, "application/json", &json!(null))
}

#[test]
fn discovery_serves_the_built_in_kinds_of_1_27_and_not_the_removed_versions() {
    let api = kube_api::KubeApiStandin::start();
    for (gv, plural, kind, namespaced, short) in [
        (
            "admissionregistration.k8s.io/v1",
            "mutatingwebhookconfigurations",
            "MutatingWebhookConfiguration",
            false,
            None,
        ),
        (
            "admissionregistration.k8s.io/v1",
            "validatingwebhookconfigurations",
            "ValidatingWebhookConfiguration",
            false,
            None,
        ),
        (
            "networking.k8s.io/v1",
            "networkpolicies",
            "NetworkPolicy",
            true,
            Some("netpol"),
        ),
        ("networking.k8s.io/v1", "ingressclasses", "IngressClass", false, None),
        ("networking.k8s.io/v1", "ingresses", "Ingress", true, Some("ing")),
        (
            "policy/v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
            Some("pdb"),
        ),
        (
            "autoscaling/v2",
            "horizontalpodautoscalers",
            "HorizontalPodAutoscaler",
            true,
            Some("hpa"),
        ),
        (
            "scheduling.k8s.io/v1",
            "priorityclasses",
            "PriorityClass",
            false,
            Some("pc"),
        ),
        ("coordination.k8s.io/v1", "leases", "Lease", true, None),
        ("apiregistration.k8s.io/v1", "apiservices", "APIService", false, None),
        ("storage.k8s.io/v1", "storageclasses", "StorageClass", false, Some("sc")),
    ] {
        let list = api.get(&format!("/apis/{gv}"));
        assert_eq!(list["groupVersion"], gv, "{list}");
        let entry = list["resources"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == plural))
            .unwrap_or_else(|| panic!("{gv} {plural} not served: {list}"))
            .clone();
        assert_eq!(entry["kind"], kind, "{entry}");
        assert_eq!(entry["namespaced"], namespaced, "{entry}");
        let verbs = entry["verbs"].to_string();
        for verb in ["create", "delete", "get", "list", "patch", "update", "watch"] {
            assert!(verbs.contains(&format!("\"{verb}\"")), "{entry}");
        }
        match short {
            Some(s) => assert_eq!(entry["shortNames"], json!([s]), "{entry}"),
            None => assert!(entry.get("shortNames").is_none(), "{entry}"),
        }
    }

    // Removed in 1.25 (policy/v1beta1) and 1.26 (autoscaling/v2beta1, v2beta2).
    for gone in ["policy/v1beta1", "autoscaling/v2beta1", "autoscaling/v2beta2"] {
        let (code, body) = get_code(&api, &format!("/apis/{gone}"));
        assert_eq!(code, 404, "{gone}: {body}");
    }
    let groups = api.get("/apis");
    let versions = |group: &str| -> Vec<String> {
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == group)
            .unwrap_or_else(|| panic!("no group {group}: {groups}"))["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["groupVersion"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(versions("policy"), ["policy/v1"]);
    assert_eq!(versions("autoscaling"), ["autoscaling/v2"]);
    assert_eq!(
        versions("admissionregistration.k8s.io"),
        ["admissionregistration.k8s.io/v1"]
    );
    let policy = api.get("/apis/policy");
    assert_eq!(
        (
            policy["kind"].as_str(),
            policy["preferredVersion"]["groupVersion"].as_str()
        ),
        (Some("APIGroup"), Some("policy/v1")),
        "{policy}"
    );

    // What Tekton v0.37.5 still ships is refused; the current versions are taken.
    namespace(&api, "tekton-pipelines");
    let psp = json!({"apiVersion": "policy/v1beta1", "kind": "PodSecurityPolicy", "metadata": {"name": "tekton-pipelines"},
                     "spec": {"privileged": false}});
    let (code, body) = api.request(
        "PATCH",
        "/apis/policy/v1beta1/podsecuritypolicies/tekton-pipelines?fieldManager=nautes",
        APPLY,
        &psp,
    );
    assert_eq!(code, 404, "{body}");
    let hpa = |v: &str| {
        json!({"apiVersion": format!("autoscaling/{v}"), "kind": "HorizontalPodAutoscaler",
               "metadata": {"name": "tekton-pipelines-webhook"},
               "spec": {"minReplicas": 1, "maxReplicas": 5,
                        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "tekton-pipelines-webhook"}}})
    };
    let path = |v: &str| {
        format!("/apis/autoscaling/{v}/namespaces/tekton-pipelines/horizontalpodautoscalers/tekton-pipelines-webhook?fieldManager=nautes")
    };
    assert_eq!(api.request("PATCH", &path("v2beta1"), APPLY, &hpa("v2beta1")).0, 404);
    assert_eq!(api.request("PATCH", &path("v2"), APPLY, &hpa("v2")).0, 201);
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "vault"},
                     "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "vault"}}}});
    apply(
        &api,
        "/apis/policy/v1/namespaces/tekton-pipelines/poddisruptionbudgets/vault",
        &pdb,
    );
    assert_eq!(
        api.request(
            "PATCH",
            "/apis/policy/v1/poddisruptionbudgets/vault?fieldManager=nautes",
            APPLY,
            &pdb
        )
        .0,
        404,
        "PodDisruptionBudgets are namespaced"
    );
}

#[test]
fn webhook_configurations_round_trip_through_server_side_apply() {
    let api = kube_api::KubeApiStandin::start();
    let base = "/apis/admissionregistration.k8s.io/v1";
    let webhook = |kind: &str, side_effects: &str| {
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
               "metadata": {"name": "cert-manager-webhook", "labels": {"app": "webhook"},
                            "annotations": {"cert-manager.io/inject-ca-from-secret": "cert-manager/cert-manager-webhook-ca"}},
               "webhooks": [{"name": "webhook.cert-manager.io", "admissionReviewVersions": ["v1"],
                             "sideEffects": side_effects, "failurePolicy": "Fail", "timeoutSeconds": 10,
                             "rules": [{"apiGroups": ["cert-manager.io"], "apiVersions": ["v1"],
                                        "operations": ["CREATE", "UPDATE"], "resources": ["*/*"]}],
                             "clientConfig": {"service": {"name": "cert-manager-webhook", "namespace": "cert-manager",
                                                          "path": "/validate"}}}]})
    };
    for (kind, plural) in [
        ("ValidatingWebhookConfiguration", "validatingwebhookconfigurations"),
        ("MutatingWebhookConfiguration", "mutatingwebhookconfigurations"),
    ] {
        let path = format!("{base}/{plural}/cert-manager-webhook");
        let (code, created) = api.request(
            "PATCH",
            &format!("{path}?fieldManager=nautes"),
            APPLY,
            &webhook(kind, "None"),
        );
        assert_eq!(code, 201, "{created}");
        let live = api.get(&path);
        assert_eq!(live["kind"], kind, "{live}");
        assert_eq!(live["webhooks"], webhook(kind, "None")["webhooks"], "{live}");
        assert!(live["metadata"].get("namespace").is_none(), "cluster-scoped: {live}");
        assert!(
            managed_by(&live, "nautes").is_some_and(|m| m["operation"] == "Apply"),
            "{live}"
        );
        let (_, again) = api.request(
            "PATCH",
            &format!("{path}?fieldManager=nautes"),
            APPLY,
            &webhook(kind, "None"),
        );
        assert_eq!(
            again["metadata"]["resourceVersion"], created["metadata"]["resourceVersion"],
            "a no-op apply writes nothing"
        );
        let (code, changed) = api.request(
            "PATCH",
            &format!("{path}?fieldManager=nautes"),
            APPLY,
            &webhook(kind, "NoneOnDryRun"),
        );
        assert_eq!(code, 200, "{changed}");
        assert_eq!(changed["webhooks"][0]["sideEffects"], "NoneOnDryRun");
        assert_ne!(
            changed["metadata"]["resourceVersion"],
            created["metadata"]["resourceVersion"]
        );
        let (code, conflict) = api.request(
            "PATCH",
            &format!("{path}?fieldManager=other"),
            APPLY,
            &webhook(kind, "None"),
        );
        assert_eq!(code, 409, "another manager's webhooks: {conflict}");
        let (code, body) = api.request(
            "PATCH",
            &format!("{base}/namespaces/cert-manager/{plural}/cert-manager-webhook?fieldManager=nautes"),
            APPLY,
            &webhook(kind, "None"),
        );
        assert_eq!(code, 404, "cluster-scoped: {body}");
        let list = api.get(&format!("{base}/{plural}?labelSelector=app%3Dwebhook"));
        assert_eq!(list["kind"], format!("{kind}List"), "{list}");
        assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
        let (code, _) = api.request("DELETE", &path, "application/json", &json!(null));
        assert_eq!(code, 200);
        assert_eq!(get_code(&api, &path).0, 404);
    }
}

#[test]
fn the_system_namespaces_exist_from_the_start_and_the_immortal_ones_stay() {
    let api = kube_api::KubeApiStandin::start();
    let names: Vec<String> = api.get("/api/v1/namespaces")["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(names.contains(&ns.to_string()), "{ns}: {names:?}");
        assert_eq!(
            api.get(&format!("/api/v1/namespaces/{ns}"))["status"]["phase"],
            "Active"
        );
    }
    // Usable without creating it first (cert-manager's leader election Roles live there).
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                      "metadata": {"name": "cert-manager:leaderelection"}, "rules": []});
    apply(
        &api,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/roles/cert-manager:leaderelection",
        &role,
    );
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}});
    assert_eq!(
        api.request("POST", "/api/v1/namespaces", "application/json", &ns).0,
        409,
        "already there"
    );

    for ns in ["kube-system", "default", "kube-public"] {
        let (code, refused) = api.request(
            "DELETE",
            &format!("/api/v1/namespaces/{ns}"),
            "application/json",
            &json!(null),
        );
        assert_eq!(code, 403, "{refused}");
        assert_eq!(refused["reason"], "Forbidden", "{refused}");
        assert_eq!(
            refused["message"],
            format!(r#"namespaces "{ns}" is forbidden: this namespace may not be deleted"#)
        );
        let live = api.get(&format!("/api/v1/namespaces/{ns}"));
        assert_eq!(live["status"]["phase"], "Active", "{live}");
        assert!(live["metadata"].get("deletionTimestamp").is_none(), "{live}");
    }
    assert!(
        api.get("/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/roles/cert-manager:leaderelection")
            ["metadata"]["name"]
            .is_string()
    );
    // kube-node-lease is not immortal.
    assert_eq!(
        api.request(
            "DELETE",
            "/api/v1/namespaces/kube-node-lease",
            "application/json",
            &json!(null)
        )
        .0,
        200
    );
    wait_until(&api, "/api/v1/namespaces/kube-node-lease", "never deleted", |n| {
        n["code"] == 404
    });
}

#[test]
fn secret_string_data_is_merged_into_data_and_never_stored() {
    let api = kube_api::KubeApiStandin::start();
    namespace(&api, "apps");
    let secrets = "/api/v1/namespaces/apps/secrets";
    let decoded = |s: &serde_json::Value| -> std::collections::BTreeMap<String, String> {
        s["data"]
            .as_object()
            .unwrap_or_else(|| panic!("no data: {s}"))
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8(b64(v)).unwrap()))
            .collect()
    };
    let expect = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };

    // Create: stringData wins over data's entry of the same key.
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "created"},
                        "data": {"a": b64enc("from data"), "b": b64enc("kept")},
                        "stringData": {"a": "from stringData", "c": "plain"}});
    let (code, created) = api.request("POST", secrets, "application/json", &secret);
    assert_eq!(code, 201, "{created}");
    for body in [&created, &api.get(&format!("{secrets}/created"))] {
        assert!(body.get("stringData").is_none(), "{body}");
        assert_eq!(
            decoded(body),
            expect(&[("a", "from stringData"), ("b", "kept"), ("c", "plain")])
        );
    }

    // Update and merge patch.
    let mut replaced = created.clone();
    replaced["stringData"] = json!({"b": "replaced"});
    let (code, updated) = api.request("PUT", &format!("{secrets}/created"), "application/json", &replaced);
    assert_eq!(code, 200, "{updated}");
    assert!(updated.get("stringData").is_none(), "{updated}");
    assert_eq!(decoded(&updated)["b"], "replaced");
    let (code, patched) = api.request(
        "PATCH",
        &format!("{secrets}/created"),
        "application/merge-patch+json",
        &json!({"stringData": {"d": "patched"}}),
    );
    assert_eq!(code, 200, "{patched}");
    assert!(patched.get("stringData").is_none(), "{patched}");
    assert_eq!(
        decoded(&patched),
        expect(&[
            ("a", "from stringData"),
            ("b", "replaced"),
            ("c", "plain"),
            ("d", "patched")
        ])
    );
    assert!(
        api.get(&format!("{secrets}/created")).get("stringData").is_none(),
        "never stored"
    );

    // Server-side apply; applying the same again is no change.
    let applied = |string_data: serde_json::Value| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "applied"}, "stringData": string_data});
    let path = format!("{secrets}/applied?fieldManager=nautes");
    let (code, first) = api.request(
        "PATCH",
        &path,
        APPLY,
        &applied(json!({"user": "admin", "password": "s3cret"})),
    );
    assert_eq!(code, 201, "{first}");
    assert!(first.get("stringData").is_none(), "{first}");
    assert_eq!(decoded(&first), expect(&[("password", "s3cret"), ("user", "admin")]));
    let (code, again) = api.request(
        "PATCH",
        &path,
        APPLY,
        &applied(json!({"user": "admin", "password": "s3cret"})),
    );
    assert_eq!(code, 200, "{again}");
    assert_eq!(
        again["metadata"]["resourceVersion"], first["metadata"]["resourceVersion"],
        "a no-op apply writes nothing"
    );
    // A key left out of stringData stays in data, as on a real server
    // (the manager owns stringData.user, which is never stored).
    let (_, later) = api.request("PATCH", &path, APPLY, &applied(json!({"password": "n3w"})));
    assert_eq!(decoded(&later), expect(&[("password", "n3w"), ("user", "admin")]));
    let (code, bad) = api.request("PATCH", &path, APPLY, &applied(json!({"port": 5432})));
    assert_eq!(code, 400, "stringData values are strings: {bad}");
}

#[test]
fn the_cert_controller_and_the_vault_injector_become_ready_only_once_their_webhook_configuration_exists() {
    let api = kube_api::KubeApiStandin::start();
    namespace(&api, "ns");
    let deployment = |name: &str, container: serde_json::Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
               "spec": {"replicas": 1, "template": {"spec": {"containers": [container]}}}})
    };
    let path = |name: &str| format!("/apis/apps/v1/namespaces/ns/deployments/{name}");
    let ready = |d: &serde_json::Value| d["status"]["availableReplicas"] == 1;
    apply(
        &api,
        &path("cert-controller"),
        &deployment("cert-controller", json!({"name": "c", "args": ["certcontroller"]})),
    );
    apply(
        &api,
        &path("injector"),
        &deployment(
            "injector",
            json!({"name": "c", "args": ["agent-inject"], "env": [{"name": "AGENT_INJECT_TLS_AUTO", "value": "injector-cfg"}]}),
        ),
    );
    // A Deployment without the precondition, applied after them, is the
    // clock: once it is ready, they had their chance too.
    apply(&api, &path("clock"), &deployment("clock", json!({"name": "c"})));
    wait_until(&api, &path("clock"), "a plain Deployment rolls out", ready);
    assert!(!ready(&api.get(&path("cert-controller"))));
    assert!(!ready(&api.get(&path("injector"))));

    // A webhook configuration without External Secrets' label is not the one it waits for.
    let validating = |name: &str, labels: serde_json::Value| {
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
               "metadata": {"name": name, "labels": labels}, "webhooks": []})
    };
    apply(
        &api,
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/other",
        &validating("other", json!({})),
    );
    apply(&api, &path("clock2"), &deployment("clock2", json!({"name": "c"})));
    wait_until(&api, &path("clock2"), "a plain Deployment rolls out", ready);
    assert!(!ready(&api.get(&path("cert-controller"))));

    apply(
        &api,
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/secretstore-validate",
        &validating(
            "secretstore-validate",
            json!({"external-secrets.io/component": "webhook"}),
        ),
    );
    wait_until(
        &api,
        &path("cert-controller"),
        "ready once its webhook configuration exists",
        ready,
    );
    assert!(!ready(&api.get(&path("injector"))));
    apply(
        &api,
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/injector-cfg",
        &json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": "injector-cfg"}, "webhooks": []}),
    );
    wait_until(
        &api,
        &path("injector"),
        "ready once AGENT_INJECT_TLS_AUTO's configuration exists",
        ready,
    );
}

#[test]
fn node_port_services_get_a_node_port_which_they_keep() {
    let api = kube_api::KubeApiStandin::start();
    namespace(&api, "ns");
    let service = |name: &str, kind: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
               "spec": {"type": kind, "ports": [{"name": "https", "port": 443}]}})
    };
    let path = "/api/v1/namespaces/ns/services/exposed";
    let first = apply(&api, path, &service("exposed", "NodePort"));
    let port = first["spec"]["ports"][0]["nodePort"].as_u64().expect("a node port");
    assert!((30000..=32767).contains(&port), "{first}");
    let mut changed = service("exposed", "NodePort");
    changed["metadata"]["labels"] = json!({"a": "b"});
    let again = apply(&api, path, &changed);
    assert_eq!(again["spec"]["ports"][0]["nodePort"], port, "{again}");
    let internal = apply(
        &api,
        "/api/v1/namespaces/ns/services/internal",
        &service("internal", "ClusterIP"),
    );
    assert!(internal["spec"]["ports"][0].get("nodePort").is_none(), "{internal}");
}
