//! The state kept in a cluster a team shares: Secrets in one namespace, and
//! a `coordination.k8s.io/v1` Lease as the run lock.
//!
//! The state is the head Secret `<name>` (its first chunk, and annotations
//! saying which generation of chunks belongs to it and the sha256 of the
//! whole) plus, when the state outgrows one object, chunk Secrets
//! `<name>-g<generation>-<n>`. A write creates the new generation's chunks
//! first and then replaces the head under a resourceVersion precondition:
//! the head is the commit point, so a reader (or a crash) sees the old or
//! the new state, never a mix. Old chunks are deleted afterwards.
//!
//! The Lease is held by `user@host pid N`, renewed every third of its
//! duration while the run lives, cleared at the end, and taken over only
//! once it has expired: a run killed with SIGKILL blocks the next one for at
//! most one lease duration.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{State, StateBackend, StateError};
use crate::drivers::kube::{with_retries, KubeClient, KubeError};
use crate::inventory::types::KubernetesStateBackend;

/// Data bytes per Secret: the API server refuses Secrets over 1 MiB, and
/// the rest of the object needs room too.
pub const CHUNK_BYTES: usize = 900 * 1024;
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

const KEY: &str = "state.json";
const LABEL_STATE: &str = "install.nautes.io/state";
const ANN_GENERATION: &str = "install.nautes.io/state-generation";
const ANN_CHUNKS: &str = "install.nautes.io/state-chunks";
const ANN_SHA: &str = "install.nautes.io/state-sha256";

/// Where a kubernetes backend lives, resolved from the inventory. Also
/// kept in the workdir so commands without an inventory find it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeStateConfig {
    pub kubeconfig: PathBuf,
    #[serde(default)]
    pub context: Option<String>,
    pub namespace: String,
    pub name: String,
    pub lease_seconds: u64,
}

impl KubeStateConfig {
    /// `base_dir` resolves a relative kubeconfig (the inventory's directory).
    pub fn from_inventory(k: &KubernetesStateBackend, installation: &str, base_dir: &std::path::Path) -> Self {
        let kubeconfig = crate::inventory::load::resolve_path(base_dir, &k.kubeconfig);
        let kubeconfig = std::path::absolute(&kubeconfig).unwrap_or(kubeconfig);
        KubeStateConfig {
            kubeconfig,
            context: k.context.clone(),
            namespace: k.namespace.clone(),
            name: k
                .name
                .clone()
                .unwrap_or_else(|| format!("nautes-install-{installation}")),
            lease_seconds: k
                .lease_duration
                .map(|d| d.get().as_secs())
                .unwrap_or(DEFAULT_LEASE.as_secs()),
        }
    }

    pub async fn client(&self) -> Result<KubeClient, String> {
        KubeClient::from_kubeconfig_file(&self.kubeconfig, self.context.as_deref(), Duration::from_secs(30))
            .await
            .map_err(|e| e.to_string())
    }
}

/// What this run last saw of the head Secret: the object (with its
/// resourceVersion) or that there is none.
enum Seen {
    Unknown,
    Absent,
    Head(Box<Secret>),
}

pub struct KubeBackend {
    secrets: Api<Secret>,
    place: String,
    name: String,
    seen: Mutex<Seen>,
    /// Set by the lock when another run has taken the Lease over: nothing
    /// more may be written.
    lost: Arc<AtomicBool>,
}

impl KubeBackend {
    pub fn new(client: &KubeClient, config: &KubeStateConfig) -> KubeBackend {
        KubeBackend {
            secrets: Api::namespaced(client.raw(), &config.namespace),
            place: format!("Secret {}/{} on {}", config.namespace, config.name, client.server),
            name: config.name.clone(),
            seen: Mutex::new(Seen::Unknown),
            lost: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The flag the run's lock sets when it loses the Lease.
    pub fn lost_flag(&self) -> Arc<AtomicBool> {
        self.lost.clone()
    }

    fn error(&self, message: impl Into<String>) -> StateError {
        StateError::Remote {
            place: self.place.clone(),
            message: message.into(),
        }
    }

    fn chunk_name(&self, generation: u64, n: usize) -> String {
        format!("{}-g{generation}-{n}", self.name)
    }

    async fn get_head(&self) -> Result<Option<Secret>, StateError> {
        with_retries(|| self.secrets.get_opt(&self.name))
            .await
            .map_err(|e| self.error(format!("cannot be read: {e}")))
    }

    /// The whole state a head Secret commits to, checked against its sha256.
    async fn assemble(&self, head: &Secret) -> Result<Vec<u8>, String> {
        let ann = head.metadata.annotations.clone().unwrap_or_default();
        let generation = annotation_u64(&ann, ANN_GENERATION);
        let chunks = annotation_u64(&ann, ANN_CHUNKS).max(1) as usize;
        let mut bytes = data_of(head).ok_or("its data has no `state.json`")?;
        for n in 1..chunks {
            let name = self.chunk_name(generation, n);
            let chunk = with_retries(|| self.secrets.get_opt(&name))
                .await
                .map_err(|e| format!("chunk {name} cannot be read: {e}"))?
                .ok_or_else(|| format!("chunk Secret {name} is missing"))?;
            bytes.extend(data_of(&chunk).ok_or_else(|| format!("chunk {name} has no `state.json`"))?);
        }
        let sha = crate::util::sha256_hex(&bytes);
        if ann.get(ANN_SHA).is_some_and(|want| *want != sha) {
            return Err(format!("its chunks do not add up to the sha256 it records ({sha})"));
        }
        Ok(bytes)
    }

    /// Create (or replace a leftover of) one chunk Secret.
    async fn put_chunk(&self, name: &str, generation: u64, bytes: &[u8]) -> Result<(), StateError> {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: Some(labels(&self.name)),
                annotations: Some(BTreeMap::from([(ANN_GENERATION.to_string(), generation.to_string())])),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([(KEY.to_string(), ByteString(bytes.to_vec()))])),
            ..Default::default()
        };
        let pp = post_params();
        match with_retries(|| self.secrets.create(&pp, &secret)).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(409) => {
                // Left by a write that died before its commit: nobody reads it.
                let dp = DeleteParams::default();
                let _ = with_retries(|| self.secrets.delete(name, &dp)).await;
                with_retries(|| self.secrets.create(&pp, &secret))
                    .await
                    .map(|_| ())
                    .map_err(|e| self.error(format!("chunk {name} cannot be written: {e}")))
            }
            Err(e) => Err(self.error(format!("chunk {name} cannot be written: {e}"))),
        }
    }

    async fn delete_chunks(&self, generation: u64, chunks: usize) {
        for n in 1..chunks {
            let name = self.chunk_name(generation, n);
            let dp = DeleteParams::default();
            if let Err(e) = with_retries(|| self.secrets.delete(&name, &dp)).await {
                if !e.is_not_found() {
                    tracing::warn!("old state chunk {name} not deleted: {e}");
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl StateBackend for KubeBackend {
    fn describe(&self) -> String {
        self.place.clone()
    }

    async fn load(&self) -> Result<State, StateError> {
        // A write may commit between reading the head and its chunks (and
        // delete the chunks read next): read again once before giving up.
        let mut last_problem = String::new();
        for _ in 0..2 {
            let Some(head) = self.get_head().await? else {
                *self.seen.lock().await = Seen::Absent;
                return Ok(State::default());
            };
            match self.assemble(&head).await {
                Ok(bytes) => {
                    let state = State::parse(&bytes, &self.place).map_err(|m| self.error(m))?;
                    *self.seen.lock().await = Seen::Head(Box::new(head));
                    return Ok(state);
                }
                Err(problem) => last_problem = problem,
            }
        }
        Err(self.error(format!(
            "is not valid: {last_problem} (hint: restore it from a copy, or `migrate-state` one in)"
        )))
    }

    async fn write(&self, bytes: Vec<u8>) -> Result<(), StateError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(self.error("not written: this run lost its lock (another run took the Lease over); stopping"));
        }
        let mut seen = self.seen.lock().await;
        if matches!(*seen, Seen::Unknown) {
            *seen = match self.get_head().await? {
                Some(h) => Seen::Head(Box::new(h)),
                None => Seen::Absent,
            };
        }
        let sha = crate::util::sha256_hex(&bytes);
        let chunks: Vec<&[u8]> = if bytes.is_empty() {
            vec![&[][..]]
        } else {
            bytes.chunks(CHUNK_BYTES).collect()
        };
        // What we believe is stored: a conflict with a head that still
        // commits to it is a change of metadata only, and our write is
        // simply made again on top of it.
        let mut believed_sha = match &*seen {
            Seen::Head(h) => h.metadata.annotations.as_ref().and_then(|a| a.get(ANN_SHA).cloned()),
            _ => None,
        };
        for _attempt in 0..5 {
            let (old_generation, old_chunks) = match &*seen {
                Seen::Head(h) => {
                    let ann = h.metadata.annotations.clone().unwrap_or_default();
                    (
                        annotation_u64(&ann, ANN_GENERATION),
                        annotation_u64(&ann, ANN_CHUNKS).max(1) as usize,
                    )
                }
                _ => (0, 1),
            };
            let generation = old_generation + 1;
            for (n, chunk) in chunks.iter().enumerate().skip(1) {
                self.put_chunk(&self.chunk_name(generation, n), generation, chunk)
                    .await?;
            }
            let mut head = match &*seen {
                Seen::Head(h) => (**h).clone(),
                _ => Secret {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    type_: Some("Opaque".into()),
                    ..Default::default()
                },
            };
            head.metadata.managed_fields = None;
            head.metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .extend(labels(&self.name));
            let ann = head.metadata.annotations.get_or_insert_with(BTreeMap::new);
            ann.insert(ANN_GENERATION.into(), generation.to_string());
            ann.insert(ANN_CHUNKS.into(), chunks.len().to_string());
            ann.insert(ANN_SHA.into(), sha.clone());
            head.data = Some(BTreeMap::from([(KEY.to_string(), ByteString(chunks[0].to_vec()))]));
            let pp = post_params();
            // Not retried blindly: a replace that reached the server but lost
            // its answer comes back as a conflict, handled below.
            let result = match &*seen {
                Seen::Head(_) => self.secrets.replace(&self.name, &pp, &head).await,
                _ => self.secrets.create(&pp, &head).await,
            }
            .map_err(KubeError::from);
            match result {
                Ok(written) => {
                    *seen = Seen::Head(Box::new(written));
                    drop(seen);
                    if old_generation != generation {
                        self.delete_chunks(old_generation, old_chunks).await;
                    }
                    return Ok(());
                }
                Err(e) if e.code() == Some(409) => {
                    self.delete_chunks(generation, chunks.len()).await;
                    let fresh = self.get_head().await?;
                    let fresh_sha = fresh
                        .as_ref()
                        .and_then(|h| h.metadata.annotations.as_ref())
                        .and_then(|a| a.get(ANN_SHA).cloned());
                    if fresh_sha == Some(sha.clone()) {
                        // Our own write went through; only its answer was lost.
                        *seen = Seen::Head(Box::new(fresh.expect("a head with our sha exists")));
                        return Ok(());
                    }
                    if fresh_sha != believed_sha {
                        let by = fresh
                            .as_ref()
                            .map(last_writer)
                            .unwrap_or_else(|| "someone (it was deleted)".into());
                        *seen = match fresh {
                            Some(h) => Seen::Head(Box::new(h)),
                            None => Seen::Absent,
                        };
                        return Err(self.error(format!(
                            "was changed by {by} while this run held the lock; not overwritten, so that change is not lost \
                             (hint: see what changed with `kubectl get secret`, then run again: the run re-reads the state)"
                        )));
                    }
                    believed_sha = fresh_sha;
                    *seen = match fresh {
                        Some(h) => Seen::Head(Box::new(h)),
                        None => Seen::Absent,
                    };
                }
                Err(e) => {
                    self.delete_chunks(generation, chunks.len()).await;
                    *seen = Seen::Unknown;
                    return Err(self.error(format!("cannot be written: {e}")));
                }
            }
        }
        Err(self.error("cannot be written: it kept changing under this run (5 conflicts in a row)"))
    }
}

fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/managed-by".to_string(), "nautes-install".to_string()),
        (LABEL_STATE.to_string(), name.to_string()),
    ])
}

fn data_of(secret: &Secret) -> Option<Vec<u8>> {
    secret.data.as_ref()?.get(KEY).map(|b| b.0.clone())
}

fn annotation_u64(ann: &BTreeMap<String, String>, key: &str) -> u64 {
    ann.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Our writes' field manager, so a conflict can name the other writer.
const MANAGER: &str = "nautes-install";

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    }
}

/// Who last changed an object, from its managed fields: `manager (operation
/// at time)`. Times have one-second steps, so in a tie the other writer is
/// the one meant.
fn last_writer(secret: &Secret) -> String {
    secret
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .max_by_key(|m| (m.time.as_ref().map(|t| t.0), m.manager.as_deref() != Some(MANAGER)))
        .map(|m| {
            format!(
                "`{}` ({} at {})",
                m.manager.as_deref().unwrap_or("unknown manager"),
                m.operation.as_deref().unwrap_or("write"),
                m.time
                    .as_ref()
                    .map(|t| rfc3339(t.0))
                    .unwrap_or_else(|| "unknown time".into())
            )
        })
        .unwrap_or_else(|| "an unknown writer".into())
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Who runs this process, as the lock names it: `user@host pid N`.
pub fn identity() -> String {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        // SAFETY: getuid cannot fail.
        .unwrap_or_else(|| format!("uid{}", unsafe { libc::getuid() }));
    format!("{user}@{} pid {}", hostname(), std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("the state in {place} is locked by {holder} (until {expires}, unless renewed)")]
    Held {
        place: String,
        holder: String,
        expires: String,
    },
    #[error("the lock (Lease {place}): {message}")]
    Api { place: String, message: String },
}

/// The run lock: held while this value lives and its renewal succeeds.
pub struct LeaseLock {
    leases: Api<Lease>,
    name: String,
    place: String,
    pub identity: String,
    /// The holder of an expired lease this run took over.
    pub stale: Option<String>,
    renewal: tokio::task::JoinHandle<()>,
}

impl Drop for LeaseLock {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// The state of a Lease as the lock reads it.
struct Reading {
    lease: Option<Lease>,
    holder: Option<String>,
    expires: Option<DateTime<Utc>>,
}

fn read(lease: Option<Lease>) -> Reading {
    let spec = lease.as_ref().and_then(|l| l.spec.clone()).unwrap_or_default();
    let holder = spec.holder_identity.filter(|h| !h.is_empty());
    let expires = spec
        .renew_time
        .or(spec.acquire_time)
        .map(|t| t.0 + chrono_secs(spec.lease_duration_seconds.unwrap_or(0) as i64));
    Reading { lease, holder, expires }
}

fn chrono_secs(s: i64) -> k8s_openapi::chrono::TimeDelta {
    k8s_openapi::chrono::TimeDelta::seconds(s)
}

impl LeaseLock {
    /// Take the lock, or say who holds it and until when. An expired lease
    /// is taken over (and its holder reported as `stale`).
    pub async fn acquire(
        client: &KubeClient,
        config: &KubeStateConfig,
        lost: Arc<AtomicBool>,
    ) -> Result<LeaseLock, LeaseError> {
        let leases: Api<Lease> = Api::namespaced(client.raw(), &config.namespace);
        let place = format!("{}/{} on {}", config.namespace, config.name, client.server);
        let api_error = |e: KubeError| LeaseError::Api {
            place: place.clone(),
            message: e.to_string(),
        };
        let identity = identity();
        let duration = config.lease_seconds as i32;
        loop {
            let now = Utc::now();
            let current = read(with_retries(|| leases.get_opt(&config.name)).await.map_err(api_error)?);
            let stale = match (&current.holder, current.expires) {
                (Some(h), Some(exp)) if exp > now => {
                    return Err(LeaseError::Held {
                        place,
                        holder: h.clone(),
                        expires: rfc3339(exp),
                    })
                }
                (h, _) => h.clone(),
            };
            let spec = LeaseSpec {
                holder_identity: Some(identity.clone()),
                lease_duration_seconds: Some(duration),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(
                    current
                        .lease
                        .as_ref()
                        .and_then(|l| l.spec.as_ref())
                        .and_then(|s| s.lease_transitions)
                        .unwrap_or(0)
                        + i32::from(current.lease.is_some()),
                ),
                ..Default::default()
            };
            let pp = post_params();
            let result = match current.lease {
                Some(mut lease) => {
                    lease.spec = Some(spec);
                    leases.replace(&config.name, &pp, &lease).await
                }
                None => {
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(config.name.clone()),
                            labels: Some(labels(&config.name)),
                            ..Default::default()
                        },
                        spec: Some(spec),
                    };
                    leases.create(&pp, &lease).await
                }
            };
            match result.map_err(KubeError::from) {
                Ok(_) => {
                    let renewal = tokio::spawn(renew(
                        leases.clone(),
                        config.name.clone(),
                        identity.clone(),
                        Duration::from_secs(config.lease_seconds),
                        lost,
                    ));
                    return Ok(LeaseLock {
                        leases,
                        name: config.name.clone(),
                        place,
                        identity,
                        stale,
                        renewal,
                    });
                }
                // Another run got there between our read and write: look again.
                Err(e) if e.code() == Some(409) => continue,
                Err(e) => return Err(api_error(e)),
            }
        }
    }

    /// Stop renewing and clear the holder, so the next run starts at once.
    pub async fn release(self) -> Result<(), LeaseError> {
        self.renewal.abort();
        clear(&self.leases, &self.name, &self.identity)
            .await
            .map(|_| ())
            .map_err(|message| LeaseError::Api {
                place: self.place.clone(),
                message,
            })
    }
}

/// Clear the Lease's holder if it is `identity`; `Ok(false)` if someone
/// else (or nobody) holds it.
async fn clear(leases: &Api<Lease>, name: &str, identity: &str) -> Result<bool, String> {
    loop {
        let Some(mut lease) = with_retries(|| leases.get_opt(name)).await.map_err(|e| e.to_string())? else {
            return Ok(false);
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(identity) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        match leases
            .replace(name, &post_params(), &lease)
            .await
            .map_err(KubeError::from)
        {
            Ok(_) => return Ok(true),
            Err(e) if e.code() == Some(409) => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Renew every third of the lease; a renewal that finds another holder
/// marks the lock lost, which stops further state writes.
async fn renew(leases: Api<Lease>, name: String, identity: String, duration: Duration, lost: Arc<AtomicBool>) {
    let every = (duration / 3).max(Duration::from_millis(500));
    loop {
        tokio::time::sleep(every).await;
        let Ok(Some(mut lease)) = with_retries(|| leases.get_opt(&name)).await else {
            // Unreachable for now: the next tick tries again; the lease
            // outlives two missed renewals.
            continue;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(identity.as_str()) {
            tracing::error!(
                "lost the state lock: the Lease is now held by {}",
                spec.holder_identity.as_deref().unwrap_or("nobody")
            );
            lost.store(true, Ordering::SeqCst);
            return;
        }
        spec.renew_time = Some(MicroTime(Utc::now()));
        if let Err(e) = leases.replace(&name, &post_params(), &lease).await {
            tracing::warn!("lease renewal failed (tried again in {every:?}): {e}");
        }
    }
}

/// The state lock as `status` shows it: who holds the Lease, since when,
/// when it was last renewed and when it expires unless renewed again.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseInfo {
    pub namespace: String,
    pub name: String,
    /// `None`: nobody (never taken, or released at the end of a run).
    pub holder: Option<String>,
    pub acquired: Option<String>,
    pub renewed: Option<String>,
    pub expires: Option<String>,
    /// The holder stopped renewing: the next run takes the Lease over.
    pub expired: bool,
}

/// Read the Lease without touching it.
pub async fn lease_info(client: &KubeClient, config: &KubeStateConfig) -> Result<LeaseInfo, String> {
    let leases: Api<Lease> = Api::namespaced(client.raw(), &config.namespace);
    let current = read(
        with_retries(|| leases.get_opt(&config.name))
            .await
            .map_err(|e| format!("reading the Lease {}/{}: {e}", config.namespace, config.name))?,
    );
    let spec = current.lease.as_ref().and_then(|l| l.spec.clone()).unwrap_or_default();
    let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    Ok(LeaseInfo {
        namespace: config.namespace.clone(),
        name: config.name.clone(),
        expired: current.holder.is_some() && current.expires.is_some_and(|e| e <= Utc::now()),
        acquired: current
            .holder
            .as_ref()
            .and(spec.acquire_time.as_ref())
            .map(|t| time(&t.0)),
        renewed: current
            .holder
            .as_ref()
            .and(spec.renew_time.as_ref())
            .map(|t| time(&t.0)),
        expires: current.holder.as_ref().and(current.expires.as_ref()).map(time),
        holder: current.holder,
    })
}

/// `force-unlock`: clear the Lease if `id` holds it. `Ok(None)`: cleared;
/// `Ok(Some(holder))`: held by another (or nobody, `""`), left alone.
pub async fn force_unlock(client: &KubeClient, config: &KubeStateConfig, id: &str) -> Result<Option<String>, String> {
    let leases: Api<Lease> = Api::namespaced(client.raw(), &config.namespace);
    if clear(&leases, &config.name, id).await? {
        return Ok(None);
    }
    let current = read(
        with_retries(|| leases.get_opt(&config.name))
            .await
            .map_err(|e| e.to_string())?,
    );
    Ok(Some(current.holder.unwrap_or_default()))
}

/// Delete the state Secrets (after `migrate-state` moved them elsewhere).
pub async fn delete_state(client: &KubeClient, config: &KubeStateConfig) -> Result<(), String> {
    let secrets: Api<Secret> = Api::namespaced(client.raw(), &config.namespace);
    let selector = format!("{LABEL_STATE}={}", config.name);
    let lp = kube::api::ListParams::default().labels(&selector);
    let list = with_retries(|| secrets.list(&lp)).await.map_err(|e| e.to_string())?;
    for s in list.items {
        let name = s.metadata.name.unwrap_or_default();
        let dp = DeleteParams {
            preconditions: s.metadata.uid.map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        match with_retries(|| secrets.delete(&name, &dp)).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(format!("Secret {name}: {e}")),
        }
    }
    Ok(())
}
