//! STAND-IN controllers: out-of-cluster loops that watch a real API server
//! (by polling it every 100 ms) and write what a real controller would,
//! where the real one cannot run here.
//!
//! * vcluster's syncer: the vcluster runs a K3s API in its pod, which needs
//!   a container runtime. Once the StatefulSet `<ns>/<name>` has all its
//!   replicas ready (real controllers + kwok decide that), the syncer writes
//!   Secret `vc-<name>` with the kubeconfig of its API; here that API is a
//!   second real control plane, and the kubeconfig names it as vcluster
//!   does (`https://localhost:8443`), which the installer must rewrite.
//! * HNC's manager (sigs.k8s.io/hierarchical-namespaces is not served by the
//!   Go module proxy here): only while CRD subnamespaceanchors.hnc.x-k8s.io
//!   is Established and Deployment hnc-system/hnc-controller-manager is
//!   Available, a SubnamespaceAnchor C in namespace P makes namespace C
//!   (annotation hnc.x-k8s.io/subnamespace-of: P, tree depth labels) and
//!   gets status.status Ok, or Conflict when C exists and is not P's
//!   subnamespace; an anchor that goes takes its subnamespace with it.
//!   RoleBindings propagate down the tree as HNC always propagates them: a
//!   copy in each subnamespace (label hnc.x-k8s.io/inherited-from: the
//!   namespace of the source), replaced when the source changes, deleted
//!   when it goes. Not modelled: HNC's webhooks, propagation of other kinds
//!   (Roles included), HierarchyConfiguration.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

use super::http::Call;

/// How a stand-in reaches the API server.
#[derive(Clone)]
pub struct Api {
    pub url: String,
    pub token: String,
    pub ca_pem: String,
}

impl Api {
    pub fn of(cp: &super::controlplane::ControlPlane) -> Api {
        Api {
            url: cp.url(),
            token: cp.controllers_token(),
            ca_pem: cp.ca_pem(),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut c = Call::new(method, format!("{}{path}", self.url))
            .header("Authorization", format!("Bearer {}", self.token))
            .trust(self.ca_pem.clone());
        if let Some(b) = body {
            c = c.header("Content-Type", "application/json").body(b.to_string());
        }
        c.send()
            .map(|(code, text)| (code, serde_json::from_str(&text).unwrap_or(Value::Null)))
            .unwrap_or((0, Value::Null))
    }

    fn get(&self, path: &str) -> Option<Value> {
        match self.call("GET", path, None) {
            (200, v) => Some(v),
            _ => None,
        }
    }
}

/// A stand-in loop that runs until dropped.
pub struct Standin {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Standin {
    fn spawn(mut tick: impl FnMut() + Send + 'static) -> Standin {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                tick();
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Standin {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The `--service-cidr` the k3s container of a vcluster StatefulSet starts
/// with: the literal, or `$(SERVICE_CIDR)` resolved from the ConfigMap its
/// env names (as the kubelet would; a missing ConfigMap keeps the container
/// from starting: `None`).
fn vcluster_service_cidr(host: &Api, namespace: &str, sts: &Value) -> Option<String> {
    let containers = sts["spec"]["template"]["spec"]["containers"].as_array()?;
    let k3s = containers.iter().find(|c| c["name"] == "vcluster")?;
    let command = k3s["args"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    let flag = command
        .split_whitespace()
        .find_map(|w| w.strip_prefix("--service-cidr="))?;
    if flag != "$(SERVICE_CIDR)" {
        return Some(flag.to_string());
    }
    let from =
        k3s["env"].as_array()?.iter().find(|e| e["name"] == "SERVICE_CIDR")?["valueFrom"]["configMapKeyRef"].clone();
    let cm = host.get(&format!(
        "/api/v1/namespaces/{namespace}/configmaps/{}",
        from["name"].as_str()?
    ))?;
    cm["data"][from["key"].as_str()?].as_str().map(str::to_string)
}

/// vcluster's syncer writing `vc-<name>` once its StatefulSet is ready and
/// its k3s could start with the host's Service range (`service_cidr`):
/// upstream's k3s container needs `--service-cidr`, from the chart's
/// `serviceCIDR` or from ConfigMap `vc-cidr-<name>`, which only the vcluster
/// CLI writes; with another range the Services it syncs cannot keep their
/// addresses. Either way no API, so no secret.
pub fn vcluster_syncer(host: Api, namespace: &str, name: &str, kubeconfig: String, service_cidr: String) -> Standin {
    let sts_path = format!("/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}");
    let secrets = format!("/api/v1/namespaces/{namespace}/secrets");
    let secret_name = format!("vc-{name}");
    let namespace = namespace.to_string();
    Standin::spawn(move || {
        let Some(sts) = host.get(&sts_path) else { return };
        let want = sts["spec"]["replicas"].as_i64().unwrap_or(1).max(1);
        if sts["metadata"]["deletionTimestamp"].is_string()
            || sts["status"]["readyReplicas"].as_i64().unwrap_or(0) < want
        {
            return;
        }
        if vcluster_service_cidr(&host, &namespace, &sts).as_deref() != Some(service_cidr.as_str()) {
            return;
        }
        if host.get(&format!("{secrets}/{secret_name}")).is_some() {
            return;
        }
        let placeholder = b64("-----BEGIN STAND-IN-----\nbm90IGEgcmVhbCBrZXk=\n-----END STAND-IN-----\n");
        host.call(
            "POST",
            &secrets,
            Some(&json!({
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": secret_name},
                "data": {"config": b64(&kubeconfig), "certificate-authority": placeholder,
                         "client-certificate": placeholder, "client-key": placeholder}
            })),
        );
    })
}

/// K3s's local-path provisioner: for each claim of its StorageClass
/// (`local-path`, WaitForFirstConsumer) that the scheduler has given a node
/// (`volume.kubernetes.io/selected-node`), a hostPath volume on that node
/// bound to the claim by claimRef (the real controller-manager then binds
/// them); a released volume is deleted, as its reclaim policy says. It acts
/// only while the StorageClass exists, as the real one serves only that.
pub fn local_path_provisioner(api: Api) -> Standin {
    Standin::spawn(move || {
        if api.get("/apis/storage.k8s.io/v1/storageclasses/local-path").is_none() {
            return;
        }
        let Some(claims) = api.get("/api/v1/persistentvolumeclaims") else {
            return;
        };
        for pvc in claims["items"].as_array().into_iter().flatten() {
            let meta = &pvc["metadata"];
            let node = meta["annotations"]["volume.kubernetes.io/selected-node"].as_str();
            let class = pvc["spec"]["storageClassName"].as_str();
            let (Some(node), Some("local-path"), "Pending") =
                (node, class, pvc["status"]["phase"].as_str().unwrap_or(""))
            else {
                continue;
            };
            let uid = meta["uid"].as_str().unwrap_or_default();
            let pv_name = format!("pvc-{uid}");
            if api.get(&format!("/api/v1/persistentvolumes/{pv_name}")).is_some() {
                continue;
            }
            api.call(
                "POST",
                "/api/v1/persistentvolumes",
                Some(&json!({
                    "apiVersion": "v1", "kind": "PersistentVolume",
                    "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": "rancher.io/local-path"}},
                    "spec": {
                        "capacity": {"storage": pvc["spec"]["resources"]["requests"]["storage"]},
                        "accessModes": pvc["spec"]["accessModes"],
                        "persistentVolumeReclaimPolicy": "Delete",
                        "storageClassName": "local-path",
                        "hostPath": {"path": format!("/var/lib/rancher/k3s/storage/{pv_name}"), "type": "DirectoryOrCreate"},
                        "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                     "namespace": meta["namespace"], "name": meta["name"], "uid": uid},
                        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}
                    }
                })),
            );
        }
        let Some(volumes) = api.get("/api/v1/persistentvolumes") else {
            return;
        };
        for pv in volumes["items"].as_array().into_iter().flatten() {
            if pv["status"]["phase"] == "Released" && pv["spec"]["storageClassName"] == "local-path" {
                let name = pv["metadata"]["name"].as_str().unwrap_or_default();
                api.call("DELETE", &format!("/api/v1/persistentvolumes/{name}"), None);
            }
        }
    })
}

const HNC: &str = "hnc.x-k8s.io";

fn hnc_active(api: &Api) -> bool {
    let crd = api.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/subnamespaceanchors.hnc.x-k8s.io");
    let established = crd.is_some_and(|c| {
        c["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|x| x["type"] == "Established" && x["status"] == "True"))
    });
    let manager = api.get("/apis/apps/v1/namespaces/hnc-system/deployments/hnc-controller-manager");
    established && manager.is_some_and(|d| d["status"]["availableReplicas"].as_i64().unwrap_or(0) >= 1)
}

fn subnamespace_of(ns: &Value) -> Option<String> {
    ns["metadata"]["annotations"][format!("{HNC}/subnamespace-of")]
        .as_str()
        .map(str::to_string)
}

/// HNC's anchor reconciler.
pub fn hnc_manager(api: Api) -> Standin {
    let mut known: BTreeSet<(String, String)> = BTreeSet::new();
    Standin::spawn(move || {
        if !hnc_active(&api) {
            return;
        }
        let Some(list) = api.get(&format!("/apis/{HNC}/v1alpha2/subnamespaceanchors")) else {
            return;
        };
        let mut now = BTreeSet::new();
        for anchor in list["items"].as_array().cloned().unwrap_or_default() {
            let parent = anchor["metadata"]["namespace"].as_str().unwrap_or("").to_string();
            let child = anchor["metadata"]["name"].as_str().unwrap_or("").to_string();
            now.insert((parent.clone(), child.clone()));
            let Some(parent_ns) = api.get(&format!("/api/v1/namespaces/{parent}")) else {
                continue;
            };
            if parent_ns["metadata"]["deletionTimestamp"].is_string() {
                continue;
            }
            let child_ns = match api.get(&format!("/api/v1/namespaces/{child}")) {
                Some(ns) => ns,
                None => {
                    let suffix = format!(".tree.{HNC}/depth");
                    let mut labels = serde_json::Map::new();
                    labels.insert(format!("{child}{suffix}"), "0".into());
                    for (k, v) in parent_ns["metadata"]["labels"].as_object().cloned().unwrap_or_default() {
                        if let Some(depth) = k
                            .strip_suffix(&suffix)
                            .and(v.as_str())
                            .and_then(|d| d.parse::<u32>().ok())
                        {
                            labels.insert(k, (depth + 1).to_string().into());
                        }
                    }
                    let ns = json!({"apiVersion": "v1", "kind": "Namespace",
                                    "metadata": {"name": child, "labels": labels,
                                                 "annotations": {format!("{HNC}/subnamespace-of"): parent}}});
                    api.call("POST", "/api/v1/namespaces", Some(&ns));
                    ns
                }
            };
            let state = if subnamespace_of(&child_ns).as_deref() == Some(parent.as_str()) {
                "Ok"
            } else {
                "Conflict"
            };
            if anchor["status"]["status"] != state {
                let mut updated = anchor.clone();
                updated["status"]["status"] = state.into();
                let path = format!("/apis/{HNC}/v1alpha2/namespaces/{parent}/subnamespaceanchors/{child}");
                // Through the status subresource where the CRD has one.
                if api.call("PUT", &format!("{path}/status"), Some(&updated)).0 == 404 {
                    api.call("PUT", &path, Some(&updated));
                }
            }
        }
        // An anchor that went takes its subnamespace (and only its own) along.
        for (parent, child) in known.difference(&now) {
            if let Some(ns) = api.get(&format!("/api/v1/namespaces/{child}")) {
                if subnamespace_of(&ns).as_deref() == Some(parent.as_str())
                    && !ns["metadata"]["deletionTimestamp"].is_string()
                {
                    api.call("DELETE", &format!("/api/v1/namespaces/{child}"), None);
                }
            }
        }
        // RoleBindings down the tree, a level per pass (copies propagate on).
        for (parent, child) in &now {
            propagate_role_bindings(&api, parent, child);
        }
        known = now;
    })
}

const INHERITED_FROM: &str = "hnc.x-k8s.io/inherited-from";

/// HNC's propagation of RoleBindings from `parent` into its subnamespace `child`.
fn propagate_role_bindings(api: &Api, parent: &str, child: &str) {
    let Some(ns) = api.get(&format!("/api/v1/namespaces/{child}")) else {
        return;
    };
    if subnamespace_of(&ns).as_deref() != Some(parent) || ns["metadata"]["deletionTimestamp"].is_string() {
        return;
    }
    let list = |ns: &str| -> Option<Vec<Value>> {
        api.get(&format!(
            "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"
        ))
        .map(|l| l["items"].as_array().cloned().unwrap_or_default())
    };
    let (Some(sources), Some(present)) = (list(parent), list(child)) else {
        return;
    };
    let path = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{child}/rolebindings");
    let mut wanted = BTreeSet::new();
    for rb in &sources {
        let name = rb["metadata"]["name"].as_str().unwrap_or("").to_string();
        let origin = rb["metadata"]["labels"][INHERITED_FROM]
            .as_str()
            .unwrap_or(parent)
            .to_string();
        wanted.insert(name.clone());
        // HNC's copy keeps the source's labels and annotations but its own (hnc.x-k8s.io).
        let keep = |m: &Value| -> serde_json::Map<String, Value> {
            m.as_object()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|(k, _)| !k.split('/').next().unwrap_or("").ends_with("hnc.x-k8s.io"))
                .collect()
        };
        let mut labels = keep(&rb["metadata"]["labels"]);
        labels.insert(INHERITED_FROM.into(), origin.into());
        let copy = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                          "metadata": {"name": name, "namespace": child, "labels": labels,
                                       "annotations": keep(&rb["metadata"]["annotations"])},
                          "roleRef": rb["roleRef"], "subjects": rb["subjects"]});
        match present.iter().find(|p| p["metadata"]["name"] == name.as_str()) {
            Some(p) if p["roleRef"] == copy["roleRef"] && p["subjects"] == copy["subjects"] => {}
            Some(_) => {
                api.call("DELETE", &format!("{path}/{name}"), None);
                api.call("POST", &path, Some(&copy));
            }
            None => {
                api.call("POST", &path, Some(&copy));
            }
        }
    }
    for p in &present {
        let name = p["metadata"]["name"].as_str().unwrap_or("");
        if p["metadata"]["labels"][INHERITED_FROM].is_string() && !wanted.contains(name) {
            api.call("DELETE", &format!("{path}/{name}"), None);
        }
    }
}
