//! The Kubernetes driver: a client built from a kubeconfig (kube crate),
//! API discovery that knows which kinds the cluster serves right now, and
//! retries for the transient failures every API server has (5xx, 429,
//! dropped connections). The apply engine in [`apply`] is built on it.
//! Knows nothing of Nautes.

pub mod apply;
pub mod objects;
pub mod readiness;
pub mod service_range;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::Mutex;

pub use objects::ObjectRef;

/// A kind the cluster serves: how to address it.
#[derive(Debug, Clone)]
pub struct Served {
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// A failure talking to the API, already phrased for the user.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("{0}")]
    Config(String),
    /// The API answered with a Status: code, reason and its message.
    #[error("{code} {reason}: {message}")]
    Api { code: u16, reason: String, message: String },
    #[error("cannot reach the API server: {0}")]
    Transport(String),
}

impl KubeError {
    pub fn code(&self) -> Option<u16> {
        match self {
            KubeError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    /// Worth another try: the server or the network, not the request.
    fn is_transient(&self) -> bool {
        match self {
            KubeError::Api { code, .. } => *code == 429 || *code >= 500,
            KubeError::Transport(_) => true,
            KubeError::Config(_) => false,
        }
    }
}

impl From<kube::Error> for KubeError {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => KubeError::Api {
                code: s.code,
                reason: s.reason,
                message: s.message,
            },
            other => KubeError::Transport(other.to_string()),
        }
    }
}

/// Attempts for one idempotent request before its failure is reported.
const ATTEMPTS: u32 = 5;

/// Run an idempotent request, retrying transient failures with a short
/// exponential back-off (0.2 s, 0.4 s, ... capped at 3 s).
pub async fn with_retries<T, F, Fut>(mut request: F) -> Result<T, KubeError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(200);
    for attempt in 1.. {
        match request().await.map_err(KubeError::from) {
            Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                tracing::debug!("transient API failure (attempt {attempt}): {e}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(3));
            }
            other => return other,
        }
    }
    unreachable!("the loop returns on the last attempt")
}

/// The kinds one group/version serves, by kind name; `None` once the API
/// said it does not serve the group/version at all.
type GroupKinds = Option<Vec<(String, Served)>>;

/// One cluster, reached through one kubeconfig context.
pub struct KubeClient {
    client: kube::Client,
    /// Where the client points, for messages.
    pub server: String,
    /// group/version -> its kinds.
    discovery: Mutex<HashMap<String, GroupKinds>>,
}

impl KubeClient {
    /// From a kubeconfig file and optional context (the current one otherwise).
    pub async fn from_kubeconfig_file(
        path: &Path,
        context: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, KubeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| KubeError::Config(format!("cannot read kubeconfig {}: {e}", path.display())))?;
        Self::from_kubeconfig_text(&text, context, timeout)
            .await
            .map_err(|e| KubeError::Config(format!("kubeconfig {}: {e}", path.display())))
    }

    pub async fn from_kubeconfig_text(text: &str, context: Option<&str>, timeout: Duration) -> Result<Self, KubeError> {
        let kubeconfig = Kubeconfig::from_yaml(text).map_err(|e| KubeError::Config(e.to_string()))?;
        let options = KubeConfigOptions {
            context: context.map(str::to_string),
            ..Default::default()
        };
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| KubeError::Config(e.to_string()))?;
        config.connect_timeout = Some(Duration::from_secs(10));
        config.read_timeout = Some(timeout);
        config.write_timeout = Some(timeout);
        let server = config.cluster_url.to_string().trim_end_matches('/').to_string();
        let client = kube::Client::try_from(config).map_err(|e| KubeError::Config(e.to_string()))?;
        Ok(KubeClient {
            client,
            server,
            discovery: Mutex::new(HashMap::new()),
        })
    }

    pub fn raw(&self) -> kube::Client {
        self.client.clone()
    }

    /// The server's version string: proves the API answers and our credentials work.
    pub async fn server_version(&self) -> Result<String, KubeError> {
        let info = with_retries(|| self.client.apiserver_version()).await?;
        Ok(info.git_version)
    }

    /// How to address `kind` of `api_version`, if the cluster serves it now.
    /// A miss re-reads discovery once: the kind may be a CRD that has just
    /// become established.
    pub async fn served(&self, api_version: &str, kind: &str) -> Result<Option<Served>, KubeError> {
        if let Some(found) = self.cached(api_version, kind).await {
            return Ok(found);
        }
        // Answer from what this refresh read, not from the shared cache:
        // another task may clear the cache (after deleting CRDs) meanwhile,
        // and a cleared cache is not "not served".
        let kinds = self.refresh(api_version).await?;
        Ok(kinds.and_then(|kinds| kinds.into_iter().find(|(k, _)| k == kind).map(|(_, s)| s)))
    }

    /// `Some(answer)` if discovery for the group/version is cached and
    /// answers for the kind, `None` if it has to be (re)read.
    async fn cached(&self, api_version: &str, kind: &str) -> Option<Option<Served>> {
        let map = self.discovery.lock().await;
        match map.get(api_version)? {
            Some(kinds) => kinds.iter().find(|(k, _)| k == kind).map(|(_, s)| Some(s.clone())),
            None => None,
        }
    }

    /// Forget what discovery said (after CRDs were created or deleted).
    pub async fn forget_discovery(&self) {
        self.discovery.lock().await.clear();
    }

    /// Read discovery for a group/version, cache it and return it (`None`:
    /// the group/version is not served).
    async fn refresh(&self, api_version: &str) -> Result<GroupKinds, KubeError> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api_version.to_string()),
        };
        let list = if group.is_empty() {
            with_retries(|| self.client.list_core_api_resources(&version)).await
        } else {
            with_retries(|| self.client.list_api_group_resources(api_version)).await
        };
        let kinds = match list {
            Ok(list) => Some(
                list.resources
                    .into_iter()
                    // Subresources (deployments/status) are not kinds of their own.
                    .filter(|r| !r.name.contains('/'))
                    .map(|r| {
                        let served = Served {
                            resource: ApiResource {
                                group: group.clone(),
                                version: version.clone(),
                                api_version: api_version.to_string(),
                                kind: r.kind.clone(),
                                plural: r.name.clone(),
                            },
                            namespaced: r.namespaced,
                        };
                        (r.kind, served)
                    })
                    .collect(),
            ),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        self.discovery
            .lock()
            .await
            .insert(api_version.to_string(), kinds.clone());
        Ok(kinds)
    }

    /// The API for one kind, in one namespace or cluster-wide.
    pub fn api(&self, served: &Served, namespace: Option<&str>) -> Api<DynamicObject> {
        match (served.namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &served.resource),
            _ => Api::all_with(self.client.clone(), &served.resource),
        }
    }

    /// Every object of a kind (in one namespace, or everywhere), or `None`
    /// if the cluster does not serve the kind.
    pub async fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Option<Vec<DynamicObject>>, KubeError> {
        let Some(served) = self.served(api_version, kind).await? else {
            return Ok(None);
        };
        let api = self.api(&served, namespace);
        let params = kube::api::ListParams::default();
        Ok(Some(with_retries(|| api.list(&params)).await?.items))
    }

    /// The object as it is now, or `None` if it does not exist.
    pub async fn get(&self, served: &Served, r: &ObjectRef) -> Result<Option<DynamicObject>, KubeError> {
        let api = self.api(served, r.namespace.as_deref());
        with_retries(|| api.get_opt(&r.name)).await
    }
}
