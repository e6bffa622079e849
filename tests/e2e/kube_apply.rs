//! The apply engine against a real kube-apiserver (with the real controllers
//! and kwok nodes): ordering, waits, idempotence (counted in the apiserver's
//! audit log), pruning, conflicts with another real field manager, retries
//! and teardown order. The order checks read the audit log, not our log text.

use crate::support::controlplane;

use std::time::Duration;

use controlplane::ControlPlane as KubeApiStandin;
use nautes_install::drivers::kube::apply::{apply_set, delete_objects, ApplyOptions, ApplyReport};
use nautes_install::drivers::kube::{KubeClient, ObjectRef};
use serde_json::{json, Value};

fn crd() -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.example.io"},
           "spec": {"group": "example.io", "scope": "Namespaced",
                    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                    "versions": [{"name": "v1", "served": true, "storage": true,
                                  "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

fn config_map(name: &str, value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "demo"}, "data": {"k": value}})
}

fn deployment(name: &str, replicas: i64) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "demo"},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
}

/// A Deployment whose pods no node can take: it never becomes available, as
/// on a cluster without room for it.
fn unschedulable(mut d: Value) -> Value {
    d["spec"]["template"]["spec"]["nodeSelector"] = json!({"nautes.test/no-such-node": "true"});
    d
}

fn widget() -> Value {
    json!({"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "demo"}, "spec": {"size": 3}})
}

async fn client(api: &KubeApiStandin) -> KubeClient {
    KubeClient::from_kubeconfig_text(&api.kubeconfig(), None, Duration::from_secs(30))
        .await
        .expect("client from the stand-in's kubeconfig")
}

fn no_progress(_: String) {}

fn options(timeout: Duration, previous: Vec<ObjectRef>, force: bool) -> ApplyOptions<'static> {
    ApplyOptions {
        set: "test/app".into(),
        default_namespace: Some("demo".into()),
        force_conflicts: force,
        timeout,
        previous,
        concurrency: 4,
        progress: &no_progress,
    }
}

async fn apply(api: &KubeApiStandin, objects: Vec<Value>, previous: Vec<ObjectRef>) -> Result<ApplyReport, String> {
    let c = client(api).await;
    apply_set(&c, objects, &options(Duration::from_secs(20), previous, false)).await
}

/// Index in the log of the first request of `method` whose path ends with `tail`.
fn first(log: &[Value], method: &str, tail: &str) -> usize {
    log.iter()
        .position(|r| r["method"] == method && r["path"].as_str().unwrap_or("").ends_with(tail))
        .unwrap_or_else(|| panic!("no {method} …{tail} in {log:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_then_namespaces_then_objects_and_custom_resources_only_once_established() {
    if controlplane::skip_unless_available() {
        return;
    }
    let api = KubeApiStandin::start();
    // Given in the worst order on purpose.
    let objects = vec![
        widget(),
        deployment("web", 2),
        config_map("settings", "a"),
        namespace("demo"),
        crd(),
    ];
    let report = apply(&api, objects, vec![]).await.expect("apply");
    assert_eq!(report.written, 5);
    let log = api.requests();
    let crd_at = first(&log, "PATCH", "/customresourcedefinitions/widgets.example.io");
    let ns_at = first(&log, "PATCH", "/api/v1/namespaces/demo");
    let cm_at = first(&log, "PATCH", "/configmaps/settings");
    let widget_at = first(&log, "PATCH", "/widgets/w");
    assert!(
        crd_at < ns_at && ns_at < cm_at && cm_at < widget_at,
        "order: {crd_at} {ns_at} {cm_at} {widget_at}"
    );
    // The custom resource was never tried before its kind was served.
    let widget_failures: Vec<_> = log
        .iter()
        .filter(|r| {
            r["path"].as_str().unwrap_or("").contains("/widgets")
                && r["status"].as_u64() != Some(200)
                && r["status"].as_u64() != Some(201)
        })
        .collect();
    assert!(widget_failures.is_empty(), "{widget_failures:#?}");
    // The deployment was waited for: it is rolled out.
    let d = api.get("/apis/apps/v1/namespaces/demo/deployments/web");
    assert_eq!(d["status"]["availableReplicas"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_apply_of_the_same_set_writes_nothing_and_a_change_writes_one_object() {
    if controlplane::skip_unless_available() {
        return;
    }
    let api = KubeApiStandin::start();
    let set = || {
        vec![
            namespace("demo"),
            config_map("a", "1"),
            config_map("b", "1"),
            deployment("web", 1),
        ]
    };
    apply(&api, set(), vec![]).await.expect("first apply");
    api.reset_log();
    let again = apply(&api, set(), vec![]).await.expect("second apply");
    assert_eq!((again.written, again.unchanged), (0, 4));
    assert!(
        api.writes().is_empty(),
        "writes on a no-op re-apply: {:#?}",
        api.writes()
    );

    api.reset_log();
    let mut changed = set();
    changed[1] = config_map("a", "2");
    let third = apply(&api, changed, vec![]).await.expect("third apply");
    assert_eq!(third.written, 1);
    let writes = api.writes();
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert!(writes[0]["path"].as_str().unwrap().ends_with("/configmaps/a"));
    assert_eq!(api.get("/api/v1/namespaces/demo/configmaps/a")["data"]["k"], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_field_from_a_manifest_removes_it_from_the_object() {
    if controlplane::skip_unless_available() {
        return;
    }
    let api = KubeApiStandin::start();
    let mut cm = config_map("a", "1");
    cm["data"]["extra"] = json!("x");
    apply(&api, vec![namespace("demo"), cm], vec![]).await.unwrap();
    apply(&api, vec![namespace("demo"), config_map("a", "1")], vec![])
        .await
        .unwrap();
    let live = api.get("/api/v1/namespaces/demo/configmaps/a");
    assert!(live["data"].get("extra").is_none(), "{live}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_dropped_from_the_set_are_pruned_and_others_are_left_alone() {
    if controlplane::skip_unless_available() {
        return;
    }
    let api = KubeApiStandin::start();
    let first = apply(
        &api,
        vec![namespace("demo"), config_map("a", "1"), config_map("b", "1")],
        vec![],
    )
    .await
    .unwrap();
    // Someone else's object in the same namespace.
    let (code, _) = api.request(
        "POST",
        "/api/v1/namespaces/demo/configmaps",
        "application/json",
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "theirs"}}),
    );
    assert_eq!(code, 201);
    let second = apply(&api, vec![namespace("demo"), config_map("a", "1")], first.objects)
        .await
        .unwrap();
    assert_eq!(second.pruned.len(), 1);
    assert_eq!(second.pruned[0].name, "b");
    assert_eq!(api.get("/api/v1/namespaces/demo/configmaps/b")["code"], 404);
    assert_eq!(
        api.get("/api/v1/namespaces/demo/configmaps/theirs")["metadata"]["name"],
        "theirs"
    );
    assert_eq!(api.get("/api/v1/namespaces/demo/configmaps/a")["data"]["k"], "1");
}

/// With forceConflicts the set's `web` Deployment gets its one replica back.
async fn forced_apply_takes_the_replicas_back(api: &KubeApiStandin) {
    let c = client(api).await;
    apply_set(
        &c,
        vec![namespace("demo"), deployment("web", 1)],
        &options(Duration::from_secs(20), vec![], true),
    )
    .await
    .expect("forced apply");
    assert_eq!(
        api.get("/apis/apps/v1/namespaces/demo/deployments/web")["spec"]["replicas"],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_changed_by_another_manager_is_a_reported_conflict_unless_forced() {
    if controlplane::skip_unless_available() {
        return;
    }
    let api = KubeApiStandin::start();
    apply(&api, vec![namespace("demo"), deployment("web", 1)], vec![])
        .await
        .unwrap();
    // `kubectl scale`-like takeover by another manager.
    let mut theirs = deployment("web", 5);
    theirs["metadata"] = json!({"name": "web", "namespace": "demo"});
    let (code, _) = api.request(
        "PATCH",
        "/apis/apps/v1/namespaces/demo/deployments/web?fieldManager=kubectl-edit&force=true",
        "application/apply-patch+yaml",
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "demo"}, "spec": {"replicas": 5}}),
    );
    assert_eq!(code, 200);
    let err = apply(&api, vec![namespace("demo"), deployment("web", 1)], vec![])
        .await
        .unwrap_err();
    assert!(err.contains("Deployment demo/web"), "{err}");
    assert!(err.contains("kubectl-edit") && err.contains("spec.replicas"), "{err}");
    assert!(err.contains("forceConflicts"), "{err}");
    assert_eq!(
        api.get("/apis/apps/v1/namespaces/demo/deployments/web")["spec"]["replicas"],
        5,
        "not forced"
    );

    forced_apply_takes_the_replicas_back(&api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_that_never_becomes_ready_times_out_naming_it_and_its_state() {
    if controlplane::skip_unless_available() {
        return;
    }
    let api = KubeApiStandin::start();
    let c = client(&api).await;
    let err = apply_set(
        &c,
        vec![
            namespace("demo"),
            unschedulable(deployment("stuck", 1)),
            deployment("fine", 1),
        ],
        &options(Duration::from_secs(2), vec![], false),
    )
    .await
    .unwrap_err();
    assert!(
        err.contains("timed out after 2s waiting for Deployment demo/stuck"),
        "{err}"
    );
    assert!(
        err.contains("last seen:") && err.contains("Available=False (MinimumReplicasUnavailable"),
        "{err}"
    );
    assert!(!err.contains("demo/fine"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_and_the_apply_completes() {
    if controlplane::skip_unless_available() {
        return;
    }
    let mut api = KubeApiStandin::start();
    api.fail_configmap_writes("a", 2);
    apply(&api, vec![namespace("demo"), config_map("a", "1")], vec![])
        .await
        .expect("apply despite two 500s");
    let log = api.requests();
    let statuses: Vec<u64> = log
        .iter()
        .filter(|r| r["method"] == "PATCH" && r["path"].as_str().unwrap().ends_with("/configmaps/a"))
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [500, 500, 201]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kind_fails_before_anything_of_its_phase_is_sent() {
    if controlplane::skip_unless_available() {
        return;
    }
    let api = KubeApiStandin::start();
    let err = apply(&api, vec![namespace("demo"), widget()], vec![])
        .await
        .unwrap_err();
    assert!(
        err.contains("Widget demo/w") && err.contains("CustomResourceDefinition"),
        "{err}"
    );
    assert!(!api
        .requests()
        .iter()
        .any(|r| r["path"].as_str().unwrap().contains("/widgets")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_deletes_custom_resources_then_objects_then_namespaces_then_definitions() {
    if controlplane::skip_unless_available() {
        return;
    }
    let api = KubeApiStandin::start();
    let report = apply(
        &api,
        vec![crd(), namespace("demo"), config_map("a", "1"), widget()],
        vec![],
    )
    .await
    .unwrap();
    api.reset_log();
    let c = client(&api).await;
    delete_objects(&c, &report.objects, Some("test/app"), Duration::from_secs(20), 4)
        .await
        .expect("delete");
    let log = api.requests();
    let w = first(&log, "DELETE", "/widgets/w");
    let cm = first(&log, "DELETE", "/configmaps/a");
    let ns = first(&log, "DELETE", "/api/v1/namespaces/demo");
    let crd_at = first(&log, "DELETE", "/customresourcedefinitions/widgets.example.io");
    assert!(w < cm && cm < ns && ns < crd_at, "order {w} {cm} {ns} {crd_at}");
    assert_eq!(api.get("/api/v1/namespaces/demo")["code"], 404);
    // Deleting again finds nothing and succeeds.
    delete_objects(&c, &report.objects, Some("test/app"), Duration::from_secs(20), 4)
        .await
        .expect("second delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_scale_by_a_user_is_a_conflict_the_apply_names_and_force_takes_back() {
    if controlplane::skip_unless_available() {
        return;
    }
    let api = KubeApiStandin::start();
    apply(&api, vec![namespace("demo"), deployment("web", 1)], vec![])
        .await
        .unwrap();
    // The real kubectl, as a user would run it: an Update through /scale.
    let out = api.kubectl(&["-n", "demo", "scale", "deployment/web", "--replicas=3"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = apply(&api, vec![namespace("demo"), deployment("web", 1)], vec![])
        .await
        .unwrap_err();
    assert!(
        err.contains("Deployment demo/web") && err.contains("spec.replicas"),
        "{err}"
    );
    assert!(err.contains("kubectl"), "the other manager is named: {err}");
    assert_eq!(
        api.get("/apis/apps/v1/namespaces/demo/deployments/web")["spec"]["replicas"],
        3,
        "the user's change is kept unless forced"
    );
    forced_apply_takes_the_replicas_back(&api).await;
}

fn service(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "demo"},
           "spec": {"selector": {"app": name}, "ports": [{"port": 443, "targetPort": 8443}]}})
}

fn webhook_configuration(kind: &str, name: &str, backend: &str, rules: Value, failure_policy: &str) -> Value {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
           "metadata": {"name": name, "labels": {"external-secrets.io/component": "webhook"}},
           "webhooks": [{"name": format!("{name}.example.io"), "failurePolicy": failure_policy,
                         "sideEffects": "None", "admissionReviewVersions": ["v1"],
                         "clientConfig": {"service": {"namespace": "demo", "name": backend, "path": "/hook"}, "caBundle": ""},
                         "rules": rules}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_what_the_sets_own_webhook_admits_waits_for_that_webhooks_backend() {
    if controlplane::skip_unless_available() {
        return;
    }
    let api = KubeApiStandin::start();
    let mut gadgets = crd();
    gadgets["metadata"]["name"] = json!("gadgets.example.io");
    gadgets["spec"]["names"] = json!({"plural": "gadgets", "singular": "gadget", "kind": "Gadget"});
    let mut gadget = widget();
    gadget["kind"] = json!("Gadget");
    gadget["metadata"]["name"] = json!("g");
    let widgets_rule = json!([{"apiGroups": ["example.io"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["widgets"]}]);
    let objects = vec![
        crd(),
        gadgets,
        namespace("demo"),
        service("hook"),
        unschedulable(deployment("hook", 1)),
        webhook_configuration(
            "ValidatingWebhookConfiguration",
            "widgets",
            "hook",
            widgets_rule,
            "Fail",
        ),
        widget(),
        gadget,
    ];
    let c = client(&api).await;
    let err = apply_set(&c, objects, &options(Duration::from_secs(2), vec![], false))
        .await
        .unwrap_err();
    assert!(err.contains("waiting for Deployment demo/hook"), "{err}");
    let log = api.requests();
    // The webhook configuration and what it does not admit went out at once...
    first(&log, "PATCH", "/validatingwebhookconfigurations/widgets");
    first(&log, "PATCH", "/gadgets/g");
    // ...what it admits waits for its backend, which never came.
    assert!(
        !log.iter()
            .any(|r| r["path"].as_str().unwrap_or("").ends_with("/widgets/w")),
        "{log:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_blocks_and_injected_ca_bundles_are_neither_applied_nor_a_difference() {
    if controlplane::skip_unless_available() {
        return;
    }
    let api = KubeApiStandin::start();
    // controller-gen writes this status into every CRD file it generates.
    let mut definition = crd();
    definition["status"] = json!({"acceptedNames": {"kind": "", "plural": ""}, "conditions": [], "storedVersions": []});
    let pods = json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}]);
    let hook = webhook_configuration(
        "MutatingWebhookConfiguration",
        "injector-cfg",
        "injector-svc",
        pods,
        "Ignore",
    );
    let set = || {
        vec![
            definition.clone(),
            namespace("demo"),
            service("injector-svc"),
            hook.clone(),
        ]
    };
    apply(&api, set(), vec![]).await.expect("first apply");

    // The injector puts its CA into the webhook, as a field manager of its own.
    let mut injected = hook.clone();
    injected["webhooks"][0]["clientConfig"]["caBundle"] = json!("Q0EgUEVN");
    let (code, body) = api.request(
        "PATCH",
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/injector-cfg?fieldManager=vault-k8s",
        "application/merge-patch+json",
        &json!({"webhooks": injected["webhooks"]}),
    );
    assert_eq!(code, 200, "{body}");

    api.reset_log();
    let again = apply(&api, set(), vec![]).await.expect("re-apply");
    assert_eq!(again.written, 0);
    assert!(api.writes().is_empty(), "{:#?}", api.writes());
    // Not even a forced apply takes the injected CA away.
    let c = client(&api).await;
    apply_set(&c, set(), &options(Duration::from_secs(20), vec![], true))
        .await
        .expect("forced re-apply");
    assert!(api.writes().is_empty(), "{:#?}", api.writes());
    let live = api.get("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/injector-cfg");
    assert_eq!(live["webhooks"][0]["clientConfig"]["caBundle"], "Q0EgUEVN", "{live}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tearing_down_a_set_leaves_a_namespace_another_set_lives_in() {
    if controlplane::skip_unless_available() {
        return;
    }
    let api = KubeApiStandin::start();
    let c = client(&api).await;
    let set = |name: &str| ApplyOptions {
        set: name.into(),
        ..options(Duration::from_secs(20), vec![], false)
    };
    let mut pipelines_ns = namespace("demo");
    pipelines_ns["metadata"]["labels"] = json!({"app.kubernetes.io/part-of": "tekton-pipelines"});
    apply_set(&c, vec![pipelines_ns, deployment("controller", 1)], &set("pipelines"))
        .await
        .expect("pipelines");
    // A set that claimed the namespace too, as the Tekton Dashboard's once did.
    let dashboard = apply_set(
        &c,
        vec![namespace("demo"), config_map("dashboard", "1")],
        &set("dashboard"),
    )
    .await
    .expect("dashboard");
    delete_objects(&c, &dashboard.objects, Some("dashboard"), Duration::from_secs(20), 4)
        .await
        .expect("dashboard torn down");
    assert_eq!(api.get("/api/v1/namespaces/demo/configmaps/dashboard")["code"], 404);
    assert_eq!(api.get("/api/v1/namespaces/demo")["status"]["phase"], "Active");
    assert_eq!(
        api.get("/apis/apps/v1/namespaces/demo/deployments/controller")["kind"],
        "Deployment"
    );
}

fn with_container(mut d: Value, container: Value) -> Value {
    d["spec"]["template"]["spec"]["containers"] = json!([container]);
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_that_become_ready_only_once_their_webhook_configuration_exists_are_not_deadlocked() {
    if controlplane::skip_unless_available() {
        return;
    }
    let mut api = KubeApiStandin::start();
    // The stand-in controller that readies them under upstream's precondition.
    api.start_standin_controllers("webhook-gated");
    // What External Secrets 0.5.7's cert-controller and vault-k8s 1.0.0 (the
    // Vault chart's injector) need before their readiness probes pass.
    let cert_controller = with_container(
        deployment("cert-controller", 1),
        json!({"name": "cert-controller", "image": "ghcr.io/external-secrets/external-secrets:v0.5.7",
               "args": ["certcontroller", "--service-name=es-webhook"]}),
    );
    let injector = with_container(
        deployment("vault-agent-injector", 1),
        json!({"name": "sidecar-injector", "image": "hashicorp/vault-k8s:1.0.0", "args": ["agent-inject"],
               "env": [{"name": "AGENT_INJECT_TLS_AUTO", "value": "vault-agent-injector-cfg"}]}),
    );
    let pods =
        json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["pods"]}]);
    let stores = json!([{"apiGroups": ["external-secrets.io"], "apiVersions": ["v1beta1"], "operations": ["CREATE", "UPDATE"], "resources": ["secretstores"]}]);
    let objects = vec![
        namespace("demo"),
        service("es-webhook"),
        cert_controller,
        webhook_configuration(
            "ValidatingWebhookConfiguration",
            "secretstore-validate",
            "es-webhook",
            stores,
            "Fail",
        ),
        service("vault-agent-injector-svc"),
        injector,
        webhook_configuration(
            "MutatingWebhookConfiguration",
            "vault-agent-injector-cfg",
            "vault-agent-injector-svc",
            pods,
            "Ignore",
        ),
    ];
    let c = client(&api).await;
    let report = apply_set(&c, objects, &options(Duration::from_secs(10), vec![], false))
        .await
        .expect("both controllers become ready once their webhook configurations are applied");
    assert_eq!(report.written, 7);
    for name in ["cert-controller", "vault-agent-injector"] {
        let d = api.get(&format!("/apis/apps/v1/namespaces/demo/deployments/{name}"));
        assert_eq!(d["status"]["availableReplicas"], 1, "{name}: {d}");
    }
}
