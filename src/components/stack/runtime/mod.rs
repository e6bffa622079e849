//! Objects that can only be built when the step runs, because they hold
//! what earlier steps produced: our certificates and CA key (never a key in
//! a template), Dex's GitLab OAuth secret, Argo CD's repository token. They
//! are merged over the upstream manifest's objects of the same name (Argo
//! CD's argocd-cm, argocd-secret) or added beside them.
//!
//! This module holds the [`Configure`] trait each of them implements (one
//! file each: its planning and its objects), the `Runtime` record a stack
//! step keeps of one and the small helpers they share. The files here are
//! found by build.rs, which declares each as a module and lists every
//! `impl Configure for` in them as [`CONFIGURATIONS`]: adding one is its
//! file, nothing here.

// `mod <file>;` for each configuration file and `CONFIGURATIONS` (build.rs).
include!(concat!(env!("OUT_DIR"), "/configurations.rs"));

use async_trait::async_trait;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub(super) use super::plan::{Ours, Planner, StackStep};
use crate::drivers::kube::KubeClient;

use crate::components::{certificates, gitlab};
use crate::engine::{StepContext, StepError};
use crate::secret::{random_token, write_private, Secret};

pub use self::argocd::{rbac_config as argocd_rbac_config, ArgocdSpec, NautesSpec};
pub use self::certs::{CA_SECRET, CLUSTER_ISSUER, INGRESS_TLS_SECRET};
pub use self::dex::{
    identity_objects as dex_identity_objects, render_config as render_dex_config, DexConfig, DexSpec,
    StaticClient as DexStaticClient, NAMESPACE as DEX_NAMESPACE,
};
pub use self::oauth2_proxy::{tekton_dashboard_route, Oauth2ProxySpec, OAUTH2_PROXY_MIDDLEWARE, TEKTON_DASHBOARD_HOST};
pub use self::vault_proxy::VaultProxySpec;

/// One kind of run-time configuration: how it is planned (its steps, or its
/// part of a catalog release's step) and the objects its step builds when
/// it runs, from the typed spec it planned. Each lives in a file here,
/// found by the build: adding a component configured at run time is its
/// catalog entry and that file, nothing in the planner, the stack step's
/// handler or a list.
#[async_trait]
pub(super) trait Configure: Send + Sync + 'static {
    /// Its `runtime.type` in a stack step's spec.
    const TYPE: &'static str;
    type Spec: Serialize + DeserializeOwned + Send + Sync;

    /// The catalog release (slug) whose step it configures: its values
    /// (`Values::Planned`), objects and needs come from [`Configure::release`].
    const RELEASE: Option<&'static str> = None;

    /// Whether `drift` may build its objects to compare them (not when
    /// building them writes elsewhere: vault-proxy mints an AppRole secret id).
    const DRIFT: bool = true;

    /// What it adds to the step of its `RELEASE`.
    fn release(&self, _p: &mut Planner) -> Ours {
        unreachable!("{} configures no release", Self::TYPE)
    }

    /// The name its `plan` records its step under (`Planner::planned`: a
    /// catalog component's key, or its own name such as `vault-proxy`), for
    /// others to need.
    const PLANS: Option<&'static str> = None;

    /// What its `plan` reads of others' planning (`Planner::planned_step`,
    /// `Planner::catalog_needs`), by name: whichever configuration `PLANS`
    /// one of them is planned before it (see [`planning_order`]).
    const NEEDS: &'static [&'static str] = &[];

    /// Its own steps, once the management and ingress clusters are known
    /// (after the configurations it `NEEDS`, so it finds their steps).
    fn plan(&self, _p: &mut Planner, _mgmt: &str) {}

    /// The objects its step builds when it runs (`client`: the cluster they go to).
    async fn objects(&self, ctx: &StepContext, spec: &Self::Spec, client: &KubeClient)
        -> Result<Vec<Value>, StepError>;

    /// What its step's teardown undoes outside the cluster, after its
    /// objects are deleted: the credentials they carried.
    async fn destroy(&self, _ctx: &StepContext, _spec: &Self::Spec) -> Result<(), StepError> {
        Ok(())
    }
}

/// `configurations` in the order they are planned: each after every one
/// whose step it `NEEDS` (by the length of its chain of such needs), and
/// among those of equal length by `TYPE`, so the order they are found in
/// means nothing. A cycle is a bug: it stops, naming it.
pub(super) fn planning_order(configurations: &[&'static dyn Configuration]) -> Vec<&'static dyn Configuration> {
    fn depth(c: &dyn Configuration, all: &[&'static dyn Configuration], chain: &mut Vec<&'static str>) -> usize {
        assert!(
            !chain.contains(&c.kind()),
            "run-time configurations need each other in a cycle: {chain:?} -> {}",
            c.kind()
        );
        chain.push(c.kind());
        let d = c
            .needs()
            .iter()
            .filter_map(|n| all.iter().find(|o| o.plans() == Some(*n)))
            .map(|o| 1 + depth(*o, all, chain))
            .max()
            .unwrap_or(0);
        chain.pop();
        d
    }
    let mut ordered: Vec<(usize, &'static dyn Configuration)> = configurations
        .iter()
        .map(|c| (depth(*c, configurations, &mut Vec::new()), *c))
        .collect();
    ordered.sort_by_key(|(d, c)| (*d, c.kind()));
    ordered.into_iter().map(|(_, c)| c).collect()
}

/// A [`Configure`] with its spec decoded from the step's record: what the
/// planner and the stack step's handler call.
#[async_trait]
pub(super) trait Configuration: Send + Sync {
    fn kind(&self) -> &'static str;
    fn configures(&self) -> Option<&'static str>;
    fn drift(&self) -> bool;
    fn plans(&self) -> Option<&'static str>;
    fn needs(&self) -> &'static [&'static str];
    fn release(&self, p: &mut Planner) -> Ours;
    fn plan(&self, p: &mut Planner, mgmt: &str);
    async fn objects(&self, ctx: &StepContext, spec: &Runtime, client: &KubeClient) -> Result<Vec<Value>, StepError>;
    async fn destroy(&self, ctx: &StepContext, spec: &Runtime) -> Result<(), StepError>;
}

#[async_trait]
impl<C: Configure> Configuration for C {
    fn kind(&self) -> &'static str {
        C::TYPE
    }

    fn configures(&self) -> Option<&'static str> {
        C::RELEASE
    }

    fn drift(&self) -> bool {
        C::DRIFT
    }

    fn plans(&self) -> Option<&'static str> {
        C::PLANS
    }

    fn needs(&self) -> &'static [&'static str] {
        C::NEEDS
    }

    fn release(&self, p: &mut Planner) -> Ours {
        Configure::release(self, p)
    }

    fn plan(&self, p: &mut Planner, mgmt: &str) {
        Configure::plan(self, p, mgmt)
    }

    async fn objects(&self, ctx: &StepContext, spec: &Runtime, client: &KubeClient) -> Result<Vec<Value>, StepError> {
        Configure::objects(self, ctx, &spec.decode::<C>()?, client).await
    }

    async fn destroy(&self, ctx: &StepContext, spec: &Runtime) -> Result<(), StepError> {
        Configure::destroy(self, ctx, &spec.decode::<C>()?).await
    }
}

/// What a stack step builds at run time, as its spec records it: the
/// configuration's `TYPE` and its typed spec's fields beside it (the
/// record an enum tagged by `type` would make).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Runtime {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub spec: serde_json::Map<String, Value>,
}

impl Runtime {
    /// The record of `spec`, a spec of configuration `C`.
    pub(super) fn of<C: Configure>(spec: &C::Spec) -> Runtime {
        let spec = match serde_json::to_value(spec).expect("a configuration's spec serializes") {
            Value::Object(m) => m,
            Value::Null => Default::default(),
            other => panic!("the spec of {} is not a map: {other}", C::TYPE),
        };
        Runtime {
            kind: C::TYPE.into(),
            spec,
        }
    }

    fn decode<C: Configure>(&self) -> Result<C::Spec, StepError> {
        serde_json::from_value(Value::Object(self.spec.clone()))
            .map_err(|e| StepError::new(format!("run-time spec of {}: {e}", C::TYPE)))
    }

    /// Its configuration, if this version of nautes-install knows it.
    pub(super) fn configuration(&self) -> Result<&'static dyn Configuration, StepError> {
        CONFIGURATIONS
            .iter()
            .copied()
            .find(|c| c.kind() == self.kind)
            .ok_or_else(|| StepError::new(format!("no run-time configuration `{}` in this version", self.kind)))
    }
}

/// The configuration of the catalog release `slug`, if one configures it.
pub(super) fn of_release(slug: &str) -> Option<&'static dyn Configuration> {
    CONFIGURATIONS.iter().copied().find(|c| c.configures() == Some(slug))
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
}

fn read(path: &str, what: &str) -> Result<String, StepError> {
    std::fs::read_to_string(path).map_err(|e| StepError::new(format!("cannot read {what} at {path}: {e}")))
}

fn pki_outputs(ctx: &StepContext) -> Result<&Value, StepError> {
    ctx.needs_outputs
        .get(certificates::STEP_ID)
        .ok_or_else(|| StepError::new("the PKI step has not run (internal error: missing need)"))
}

fn ca_pem(ctx: &StepContext) -> Result<String, StepError> {
    read(
        pki_outputs(ctx)?["ca"]["cert"].as_str().unwrap_or_default(),
        "our CA certificate",
    )
}

fn gitlab_outputs(ctx: &StepContext) -> Result<&Value, StepError> {
    ctx.needs_outputs
        .get(gitlab::STEP_ID)
        .ok_or_else(|| StepError::new("the GitLab step has not run (internal error: missing need)"))
}

fn tls_secret(name: &str, namespace: &str, cert: &str, key: &Secret) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
           "metadata": {"name": name, "namespace": namespace},
           "data": {"tls.crt": b64(cert), "tls.key": b64(key.expose())}})
}

/// A random secret made on first use and kept 0600 under the outputs.
pub(crate) fn kept_secret(ctx: &StepContext, name: &str) -> Result<Secret, StepError> {
    let path = ctx.outputs_dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Secret::new(s.trim())),
        Err(_) => {
            let s = random_token().map_err(|e| StepError::new(format!("cannot make a random secret: {e}")))?;
            write_private(&path, &s).map_err(|e| StepError::new(format!("cannot write {}: {e}", path.display())))?;
            Ok(s)
        }
    }
}

/// An Ingress served by Traefik with its default (our wildcard) certificate.
fn ingress(name: &str, namespace: &str, host: &str, service: &str, port: u16) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": name, "namespace": namespace,
                        "annotations": {"traefik.ingress.kubernetes.io/router.entrypoints": "websecure",
                                        "traefik.ingress.kubernetes.io/router.tls": "true"}},
           "spec": {"rules": [{"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix",
               "backend": {"service": {"name": service, "port": {"number": port}}}}]}}],
                    "tls": [{"hosts": [host]}]}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlays_merge_maps_and_replace_the_rest() {
        let mut base = json!({"data": {"a": "1", "b": "2"}, "list": [1, 2], "keep": true});
        crate::steps::manifests::merge_values(&mut base, &json!({"data": {"b": "3", "c": "4"}, "list": [9]}));
        assert_eq!(
            base,
            json!({"data": {"a": "1", "b": "3", "c": "4"}, "list": [9], "keep": true})
        );
    }
}
