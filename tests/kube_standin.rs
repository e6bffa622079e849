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
