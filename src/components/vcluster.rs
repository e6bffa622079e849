//! Virtual clusters (the tenants' management clusters): the pinned vcluster
//! chart rendered with `helm template` and applied to the host cluster
//! through the apply engine, its API exposed by NodePort or ingress, and its
//! admin kubeconfig taken from the `vc-<name>` secret, pointed at the exposed
//! endpoint, written 0600 and proven to answer. The chart has no node-port
//! value: the inventory's port is set on the Service it renders, and the
//! endpoint's port is the one the live Service has. Later steps that target the
//! virtual cluster use that kubeconfig.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::drivers::kube::{KubeClient, ObjectRef};
use crate::engine::{Difference, Handler, StepContext, StepError};
use crate::inventory::spans::{push_index, push_key};
use crate::inventory::{Diagnostic, ExposeType, Loaded};
use crate::plan::{Step, StepSpec};
use crate::secret::{write_private, Secret};
use crate::steps::kube_target::{client, target, vcluster_step_id, KubeTarget};
use crate::steps::kubeconfig::rewrite;
use crate::steps::manifests::{
    self, apply_objects, delete_recorded, drift_objects, previous_objects, render_objects, report_outputs, Source,
};
use crate::steps::release_files::{self, files_step, pinned_file};
use crate::versions;
use crate::wait::{Poll, Wait};

pub const KIND: &str = "vcluster";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VclusterSpec {
    pub host: KubeTarget,
    pub name: String,
    pub namespace: String,
    pub version: String,
    pub artifacts: String,
    pub chart: String,
    pub expose_type: ExposeType,
    pub node_port: Option<u16>,
    pub expose_host: Option<String>,
    pub values: serde_json::Map<String, Value>,
    /// The virtual cluster's apiserver signs users in through Dex: K3s's
    /// `--kube-apiserver-arg` flags through the chart's `vcluster.extraArgs`,
    /// our CA from a ConfigMap mounted at `ca_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<super::kube_oidc::ApiserverOidc>,
}

/// Where the virtual cluster's K3s reads our CA (a ConfigMap's volume).
pub const OIDC_CA_DIR: &str = "/etc/nautes";
const OIDC_CA_CONFIGMAP: &str = "nautes-ca";
const OIDC_CA_KEY: &str = "nautes-ca.crt";

impl StepSpec for VclusterSpec {
    const KIND: &'static str = KIND;
}

pub fn kubeconfig_file_name(name: &str) -> String {
    format!("vcluster-{name}/kubeconfig")
}

pub fn plan(loaded: &Loaded, steps: &mut Vec<Step>) -> Result<(), Vec<Diagnostic>> {
    let mut problems = Vec::new();
    let mut planned_files = std::collections::BTreeSet::new();
    let oidc = super::kube_oidc::for_inventory(&loaded.inventory, &format!("{OIDC_CA_DIR}/{OIDC_CA_KEY}"));
    for (i, vc) in loaded.inventory.virtual_clusters.iter().enumerate() {
        let base = push_index("virtualClusters", i);
        let version = vc.version.clone().unwrap_or(versions::VCLUSTER.to_string());
        let chart = format!("vcluster-{version}.tgz");
        let file = pinned_file(
            &chart,
            format!("vcluster/{version}/{chart}"),
            format!("{}/charts/{chart}", versions::VCLUSTER_CHART_REPO),
            None,
        );
        let files_id = release_files::step_id("vcluster", &version);
        if planned_files.insert(files_id.clone()) {
            match files_step(
                loaded,
                "vcluster",
                "vcluster chart",
                &version,
                vec![file],
                &push_key(&base, "version"),
            ) {
                Ok(s) => steps.push(s),
                Err(d) => {
                    problems.push(d);
                    continue;
                }
            }
        }
        let Some(host) = target(loaded, &vc.host_cluster) else {
            continue;
        };
        let spec = VclusterSpec {
            host,
            name: vc.name.clone(),
            namespace: vc.namespace.clone().unwrap_or(format!("vcluster-{}", vc.name)),
            version: version.clone(),
            artifacts: files_id.clone(),
            chart,
            expose_type: vc.expose.expose_type,
            node_port: vc.expose.node_port,
            expose_host: vc.expose.host.clone(),
            values: vc.values.clone(),
            oidc: oidc.clone(),
        };
        let mut needs = spec.host.needs();
        needs.push(files_id);
        if spec.oidc.is_some() {
            needs.push(super::certificates::STEP_ID.to_string());
        }
        steps.push(
            Step::of(
                vcluster_step_id(&vc.name),
                format!("vcluster {} {version} on {}", vc.name, vc.host_cluster),
                &spec,
            )
            .needs(needs),
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The host part of a URL (`https://10.0.0.5:6443` -> `10.0.0.5`).
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?.to_string(),
        None => authority
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(authority)
            .to_string(),
    };
    (!host.is_empty()).then_some(host)
}

/// The scheme of the (first) server in a kubeconfig.
fn served_scheme(kubeconfig: &str) -> Option<String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(kubeconfig).ok()?;
    let server = doc["clusters"][0]["cluster"]["server"].as_str()?;
    server.split_once("://").map(|(scheme, _)| scheme.to_string())
}

/// Where users reach the virtual cluster's API.
fn endpoint(spec: &VclusterSpec, host_server: &str, node_port: u16) -> Result<(String, String), StepError> {
    match spec.expose_type {
        ExposeType::Ingress => {
            let host = spec
                .expose_host
                .clone()
                .ok_or_else(|| StepError::new(format!("vcluster {}: ingress exposure needs a host", spec.name)))?;
            Ok((format!("https://{host}"), host))
        }
        ExposeType::NodePort => {
            let host = match &spec.expose_host {
                Some(h) => h.clone(),
                None => url_host(host_server).ok_or_else(|| {
                    StepError::new(format!(
                        "vcluster {}: cannot tell the host cluster's address from {host_server}",
                        spec.name
                    ))
                })?,
            };
            let shown = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            };
            Ok((format!("https://{shown}:{node_port}"), host))
        }
    }
}

/// The chart's values: ours from the template, the inventory's merged over them.
fn chart_values(
    spec: &VclusterSpec,
    endpoint: &str,
    endpoint_host: &str,
    service_cidr: &str,
) -> Result<Value, StepError> {
    let context = json!({
        "service_type": if spec.expose_type == ExposeType::NodePort { "NodePort" } else { "ClusterIP" },
        "endpoint_host": endpoint_host,
        "endpoint": endpoint,
        "ingress_host": if spec.expose_type == ExposeType::Ingress { spec.expose_host.clone() } else { None },
        "service_cidr": service_cidr,
        "oidc_args": spec.oidc.as_ref().map(|o| o.apiserver_args()).unwrap_or_default()
            .iter().map(|a| format!("--kube-apiserver-arg={a}")).collect::<Vec<_>>(),
        "oidc_ca_dir": OIDC_CA_DIR,
        "oidc_ca_configmap": OIDC_CA_CONFIGMAP,
    });
    let rendered = crate::templates::render("vcluster/values.yaml", &context).map_err(StepError::new)?;
    let mut values: Value =
        serde_yaml::from_str(&rendered).map_err(|e| StepError::new(format!("vcluster values: {e}")))?;
    manifests::merge_values(&mut values, &Value::Object(spec.values.clone()));
    Ok(values)
}

/// The host's Service range, which the virtual cluster's K3s must be
/// started with. Chart 0.10.1 otherwise takes it from ConfigMap
/// `vc-cidr-<name>`, which only the vcluster CLI writes: installed with
/// `helm template`, the pod would wait for it forever. The inventory's
/// `values.serviceCIDR` wins; a range found once is kept in the step's
/// outputs, so a re-run asks the API nothing.
async fn service_cidr(ctx: &StepContext, client: &KubeClient, spec: &VclusterSpec) -> Result<String, StepError> {
    if let Some(given) = spec.values.get("serviceCIDR").and_then(Value::as_str) {
        return Ok(given.to_string());
    }
    if let Some(known) = ctx.previous_outputs["serviceCidr"].as_str() {
        return Ok(known.to_string());
    }
    crate::drivers::kube::service_range::service_cidr(client)
        .await
        .map_err(|e| {
            StepError::new(format!(
                "vcluster {}: cannot find out the Service range of host cluster {}: {e} \
                 (hint: set the virtual cluster's `values.serviceCIDR` to the host's --service-cluster-ip-range)",
                spec.name,
                spec.host.cluster()
            ))
        })
}

/// With `storage.persistence` (the chart's default) the StatefulSet claims
/// a volume of the class `storage.className`, or of the host's default
/// class when none is named. Without that class the claim stays Pending and
/// the virtual cluster never starts (a Kubespray cluster has no default
/// class unless a provisioner was enabled), so say so before applying.
async fn check_storage(client: &KubeClient, spec: &VclusterSpec, values: &Value) -> Result<(), StepError> {
    if values["storage"]["persistence"] == json!(false) {
        return Ok(());
    }
    // Once the StatefulSet has made its claim, the class it was made with
    // is what counts: a default class changed or removed later must not
    // stop a re-run of a virtual cluster that runs.
    let claim = ObjectRef {
        api_version: "v1".into(),
        kind: "PersistentVolumeClaim".into(),
        namespace: Some(spec.namespace.clone()),
        name: format!("data-{}-0", spec.name),
    };
    if let Some(served) = client
        .served("v1", "PersistentVolumeClaim")
        .await
        .map_err(|e| StepError::new(e.to_string()))?
    {
        if client
            .get(&served, &claim)
            .await
            .map_err(|e| StepError::new(e.to_string()))?
            .is_some()
        {
            return Ok(());
        }
    }
    let classes = client
        .list("storage.k8s.io/v1", "StorageClass", None)
        .await
        .map_err(|e| StepError::new(e.to_string()))?
        .unwrap_or_default();
    let names: Vec<String> = classes.iter().filter_map(|c| c.metadata.name.clone()).collect();
    let is_default = |c: &kube::api::DynamicObject| {
        c.metadata.annotations.as_ref().is_some_and(|a| {
            [
                "storageclass.kubernetes.io/is-default-class",
                "storageclass.beta.kubernetes.io/is-default-class",
            ]
            .iter()
            .any(|k| a.get(*k).is_some_and(|v| v == "true"))
        })
    };
    let at = format!("vcluster {} on host cluster {}", spec.name, spec.host.cluster());
    let available = if names.is_empty() {
        "it has none".to_string()
    } else {
        format!("it has: {}", names.join(", "))
    };
    match values["storage"]["className"].as_str().filter(|c| !c.is_empty()) {
        Some(class) if names.iter().any(|n| n == class) => Ok(()),
        Some(class) => Err(StepError::new(format!(
            "{at}: `values.storage.className` is {class}, but the host has no such StorageClass \
             ({available}) (hint: name one of the host's StorageClasses)"
        ))),
        None if classes.iter().any(is_default) => Ok(()),
        None => Err(StepError::new(format!(
            "{at}: the chart claims a {} volume of the host's default StorageClass, but no StorageClass \
             is marked default ({available}), so the claim would stay Pending and the vcluster never start \
             (hint: set the virtual cluster's `values.storage.className` to one of the host's classes, mark one \
             default, or set `values.storage.persistence: false`: its data then lives and dies with its pod)",
            values["storage"]["size"].as_str().unwrap_or("5Gi")
        ))),
    }
}

/// Put the inventory's node port on the API Service the chart renders.
/// vcluster's chart 0.10.1 has no value for it (its Service template sets
/// no nodePort, so the cluster would pick one at random); the Service is in
/// our set, so the port applied here is ours and stays put.
fn set_node_port(objects: &mut [Value], spec: &VclusterSpec) -> Result<(), StepError> {
    let Some(wanted) = spec.node_port.filter(|_| spec.expose_type == ExposeType::NodePort) else {
        return Ok(());
    };
    let service = objects.iter_mut().find(|o| {
        o["apiVersion"] == "v1"
            && o["kind"] == "Service"
            && o["metadata"]["name"] == spec.name.as_str()
            && o["metadata"]["namespace"]
                .as_str()
                .is_none_or(|ns| ns == spec.namespace)
    });
    let port = service.and_then(|s| {
        s["spec"]["ports"]
            .as_array_mut()?
            .iter_mut()
            .find(|p| p["name"] == "https")
    });
    match port {
        Some(port) => {
            port["nodePort"] = json!(wanted);
            Ok(())
        }
        None => Err(StepError::new(format!(
            "vcluster {}: chart {} renders no Service {} with an `https` port to put node port {wanted} on",
            spec.name, spec.chart, spec.name
        ))),
    }
}

/// The node port the API Service has, read from the live Service: what
/// the cluster serves, whether it was asked for or allocated.
async fn service_node_port(client: &KubeClient, spec: &VclusterSpec) -> Result<u16, StepError> {
    let r = ObjectRef {
        api_version: "v1".into(),
        kind: "Service".into(),
        namespace: Some(spec.namespace.clone()),
        name: spec.name.clone(),
    };
    let served = client
        .served("v1", "Service")
        .await
        .map_err(|e| StepError::new(e.to_string()))?
        .ok_or_else(|| StepError::new("the host cluster serves no Services"))?;
    let svc = client
        .get(&served, &r)
        .await
        .map_err(|e| StepError::new(e.to_string()))?;
    let svc = svc.map(|s| serde_json::to_value(s).unwrap_or(Value::Null));
    let live = svc
        .as_ref()
        .and_then(|s| {
            let ports = s["spec"]["ports"].as_array()?;
            ports.iter().find(|p| p["name"] == "https").or(ports.first())?["nodePort"].as_u64()
        })
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| StepError::new(format!("{r} has no node port; set `expose.nodePort`")))?;
    match spec.node_port {
        Some(wanted) if wanted != live => Err(StepError::new(format!(
            "{r} serves node port {live}, not the {wanted} `expose.nodePort` asks for"
        ))),
        _ => Ok(live),
    }
}

/// The kubeconfig vcluster wrote into its secret, once it is there.
async fn read_vcluster_kubeconfig(
    ctx: &StepContext,
    client: &KubeClient,
    spec: &VclusterSpec,
) -> Result<String, StepError> {
    let r = ObjectRef {
        api_version: "v1".into(),
        kind: "Secret".into(),
        namespace: Some(spec.namespace.clone()),
        name: format!("vc-{}", spec.name),
    };
    let served = client
        .served("v1", "Secret")
        .await
        .map_err(|e| StepError::new(e.to_string()))?
        .ok_or_else(|| StepError::new("the host cluster serves no Secrets"))?;
    ctx.progress(format!("waiting for {r}"));
    let secret = Wait::for_(
        format!("vcluster {} to write {r}", spec.name),
        crate::steps::manifests::rollout_timeout(ctx),
    )
    .every(Duration::from_millis(300))
    .hint("is its pod running?")
    .until(|| async {
        let live = client
            .get(&served, &r)
            .await
            .map_err(|e| StepError::new(e.to_string()))?;
        Ok::<_, StepError>(match live {
            Some(secret) => Poll::Done(secret),
            None => Poll::Pending(format!("no {r} yet")),
        })
    })
    .await?;
    let data = serde_json::to_value(&secret).unwrap_or(Value::Null);
    let encoded = data["data"]["config"]
        .as_str()
        .ok_or_else(|| StepError::new(format!("{r} has no `config` key")))?;
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|_| StepError::new(format!("{r}: `config` is not base64")))?;
    String::from_utf8(bytes).map_err(|_| StepError::new(format!("{r}: `config` is not text")))
}

/// Retry until the virtual cluster's API answers through `text`.
async fn wait_api(ctx: &StepContext, spec: &VclusterSpec, text: &str, endpoint: &str) -> Result<String, StepError> {
    let http = ctx.limits.http;
    ctx.progress(format!("waiting for the API of vcluster {} at {endpoint}", spec.name));
    Wait::for_(
        format!("the API of vcluster {} at {endpoint} to answer", spec.name),
        crate::steps::manifests::rollout_timeout(ctx),
    )
    .until(|| async {
        let answer = match crate::drivers::kube::KubeClient::from_kubeconfig_text(text, None, http).await {
            Ok(c) => c.server_version().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        Ok::<_, StepError>(match answer {
            Ok(v) => Poll::Done(v),
            Err(e) => Poll::Pending(e),
        })
    })
    .await
}

/// The set as apply sends it: its namespace and the chart rendered for
/// this host; and the chart's values.
async fn objects(
    ctx: &StepContext,
    client: &KubeClient,
    spec: &VclusterSpec,
    service_cidr: &str,
) -> Result<(Vec<Value>, Value), StepError> {
    // The address is known before the chart is rendered, so the certificate can name it.
    let planned_port = spec.node_port.unwrap_or(0);
    let (planned_endpoint, endpoint_host) = endpoint(spec, &client.server, planned_port)?;
    let values = chart_values(spec, &planned_endpoint, &endpoint_host, service_cidr)?;
    let mut objects = vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": spec.namespace}})];
    if spec.oidc.is_some() {
        objects.push(json!({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": OIDC_CA_CONFIGMAP, "namespace": spec.namespace},
                            "data": {OIDC_CA_KEY: super::certificates::ca_pem_of(ctx)?}}));
    }
    let mut rendered = render_objects(
        ctx,
        &[Source::Chart {
            artifacts: spec.artifacts.clone(),
            file: spec.chart.clone(),
            release: spec.name.clone(),
            namespace: spec.namespace.clone(),
            values: values.clone(),
        }],
    )
    .await?;
    set_node_port(&mut rendered, spec)?;
    objects.extend(rendered);
    Ok((objects, values))
}

pub struct VclusterHandler;

#[async_trait]
impl Handler for VclusterHandler {
    type Spec = VclusterSpec;

    async fn apply(&self, ctx: &StepContext, spec: &VclusterSpec) -> Result<Value, StepError> {
        let client = client(ctx, &spec.host).await?;
        let service_cidr = service_cidr(ctx, &client, spec).await?;
        let (objects, values) = objects(ctx, &client, spec, &service_cidr).await?;
        check_storage(&client, spec, &values).await?;
        let set = vcluster_step_id(&spec.name);
        let report = apply_objects(
            ctx,
            &client,
            &set,
            Some(&spec.namespace),
            false,
            objects,
            previous_objects(&ctx.previous_outputs),
        )
        .await?;

        let port = service_node_port(&client, spec).await?;
        let (endpoint, _) = endpoint(spec, &client.server, port)?;
        let original = read_vcluster_kubeconfig(ctx, &client, spec).await?;
        // Keep the scheme vcluster serves; only the address changes.
        let scheme_endpoint = match served_scheme(&original) {
            Some(scheme) if scheme != "https" => endpoint.replacen("https", &scheme, 1),
            _ => endpoint,
        };
        let text = rewrite(&original, &spec.name, &scheme_endpoint)
            .map_err(|e| StepError::new(format!("vcluster {}: {e}", spec.name)))?;
        let path = ctx.outputs_dir.join(kubeconfig_file_name(&spec.name));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| StepError::new(format!("cannot create {}: {e}", parent.display())))?;
        }
        write_private(&path, &Secret::new(text.clone()))
            .map_err(|e| StepError::new(format!("cannot write {}: {e}", path.display())))?;
        let version = wait_api(ctx, spec, &text, &scheme_endpoint).await?;
        let mut out = report_outputs(&report);
        out["kubeconfig"] = json!(path);
        out["endpoint"] = json!(scheme_endpoint);
        out["serverVersion"] = json!(version);
        out["serviceCidr"] = json!(service_cidr);
        Ok(out)
    }

    /// The set on the host cluster; what runs inside the virtual cluster
    /// is the vcluster's own.
    async fn drift(&self, ctx: &StepContext, spec: &VclusterSpec) -> Result<Option<Vec<Difference>>, StepError> {
        let client = client(ctx, &spec.host).await?;
        let service_cidr = service_cidr(ctx, &client, spec).await?;
        let (objects, _) = objects(ctx, &client, spec, &service_cidr).await?;
        let previous = previous_objects(&ctx.previous_outputs);
        let set = vcluster_step_id(&spec.name);
        Ok(Some(
            drift_objects(ctx, &client, &set, Some(&spec.namespace), objects, &previous).await?,
        ))
    }

    async fn destroy(&self, ctx: &StepContext, spec: &VclusterSpec, outputs: &Value) -> Result<(), StepError> {
        match client(ctx, &spec.host).await {
            Ok(client) => delete_recorded(ctx, &client, &vcluster_step_id(&spec.name), outputs).await?,
            Err(e) if ctx.full_teardown => tracing::warn!("vcluster {}: {e}; nothing left to delete", spec.name),
            Err(e) => return Err(e),
        }
        let path: PathBuf = ctx.outputs_dir.join(kubeconfig_file_name(&spec.name));
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StepError::new(format!("cannot remove {}: {e}", path.display()))),
        }
    }
}

/// Tenants' virtual clusters.
pub struct Vclusters;

impl super::Component for Vclusters {
    fn plan(
        &self,
        loaded: &crate::inventory::Loaded,
        steps: &mut Vec<crate::plan::Step>,
    ) -> Result<(), Vec<crate::inventory::Diagnostic>> {
        plan(loaded, steps)
    }

    fn handlers(&self, registry: &mut crate::engine::Registry) {
        registry.add(VclusterHandler);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_hosts_are_found_in_all_forms() {
        assert_eq!(url_host("https://10.0.0.5:6443").as_deref(), Some("10.0.0.5"));
        assert_eq!(url_host("https://api.example.com").as_deref(), Some("api.example.com"));
        assert_eq!(url_host("https://[fd00::1]:6443/").as_deref(), Some("fd00::1"));
    }

    fn spec(node_port: Option<u16>) -> VclusterSpec {
        VclusterSpec {
            host: KubeTarget::Step {
                step: "k3s/host/kubeconfig".into(),
                cluster: "host".into(),
            },
            name: "t1".into(),
            namespace: "vcluster-t1".into(),
            version: "0.10.1".into(),
            artifacts: "artifacts/vcluster/0.10.1".into(),
            chart: "vcluster-0.10.1.tgz".into(),
            expose_type: ExposeType::NodePort,
            node_port,
            expose_host: None,
            values: Default::default(),
            oidc: None,
        }
    }

    #[test]
    fn the_node_port_goes_on_the_charts_api_service_which_must_be_there() {
        let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "t1", "namespace": "vcluster-t1"},
                             "spec": {"type": "NodePort", "ports": [{"name": "https", "port": 443, "targetPort": 8443}]}});
        let other = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "t1-headless"},
                           "spec": {"ports": [{"name": "https", "port": 443}]}});
        let mut objects = vec![other.clone(), service];
        set_node_port(&mut objects, &spec(Some(30443))).unwrap();
        assert_eq!(objects[1]["spec"]["ports"][0]["nodePort"], 30443);
        assert_eq!(objects[0], other);
        // Without one asked for, the cluster allocates it.
        let mut untouched = objects.clone();
        untouched[1]["spec"]["ports"][0]
            .as_object_mut()
            .unwrap()
            .remove("nodePort");
        let before = untouched.clone();
        set_node_port(&mut untouched, &spec(None)).unwrap();
        assert_eq!(untouched, before);
        let err = set_node_port(&mut [other], &spec(Some(30443))).unwrap_err();
        assert!(err.to_string().contains("renders no Service t1"), "{err}");
    }

    /// Keys chart 0.10.1's templates read that its values.yaml does not
    /// declare (`storage.className` is only a comment there).
    const UNDECLARED_CHART_KEYS: &[&str] = &["serviceCIDR", "storage.className"];

    #[test]
    fn the_values_we_pass_are_keys_of_the_chart() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/charts/vcluster-standin/values.yaml"
        ))
        .unwrap();
        let defaults: Value = serde_yaml::from_str(&text).unwrap();
        let mut ingress = spec(None);
        ingress.expose_type = ExposeType::Ingress;
        ingress.expose_host = Some("vc.example.com".into());
        let mut oidc = spec(Some(30443));
        oidc.oidc = Some(crate::components::kube_oidc::ApiserverOidc {
            issuer_url: "https://dex.example.com".into(),
            client_id: "kubernetes".into(),
            ca_file: "/etc/nautes/nautes-ca.crt".into(),
        });
        let values = chart_values(&oidc, "https://192.0.2.1:30443", "192.0.2.1", "10.43.0.0/16").unwrap();
        assert_eq!(
            values["vcluster"]["extraArgs"],
            json!([
                "--kube-apiserver-arg=oidc-issuer-url=https://dex.example.com",
                "--kube-apiserver-arg=oidc-client-id=kubernetes",
                "--kube-apiserver-arg=oidc-username-claim=email",
                "--kube-apiserver-arg=oidc-groups-claim=groups",
                "--kube-apiserver-arg=oidc-ca-file=/etc/nautes/nautes-ca.crt"
            ])
        );
        // The chart's own data mount stays (the list replaces the default), ours beside it.
        assert_eq!(
            values["vcluster"]["volumeMounts"],
            json!([{"mountPath": "/data", "name": "data"},
                   {"mountPath": "/etc/nautes", "name": "nautes-ca", "readOnly": true}])
        );
        assert_eq!(
            values["volumes"],
            json!([{"name": "nautes-ca", "configMap": {"name": "nautes-ca"}}])
        );
        for spec in [spec(Some(30443)), ingress, oidc] {
            let values = chart_values(&spec, "https://192.0.2.1:30443", "192.0.2.1", "10.43.0.0/16").unwrap();
            let unknown = manifests::unknown_value_keys(&values, &defaults, UNDECLARED_CHART_KEYS);
            assert!(unknown.is_empty(), "{:?}: {unknown:?} in {values}", spec.expose_type);
        }
    }

    #[test]
    fn values_merge_maps_and_replace_the_rest() {
        let mut base = json!({"service": {"type": "NodePort", "nodePort": 30443}, "syncer": {"extraArgs": ["a"]}});
        manifests::merge_values(
            &mut base,
            &json!({"service": {"nodePort": 31000}, "syncer": {"extraArgs": ["b"]}}),
        );
        assert_eq!(base["service"], json!({"type": "NodePort", "nodePort": 31000}));
        assert_eq!(base["syncer"]["extraArgs"], json!(["b"]));
    }
}
