//! Which state backend a command uses, and the run lock that goes with it.
//! The inventory says (`state.backend`); commands without an inventory
//! (`status`, `outputs`, `force-unlock`) use the one the last command with
//! an inventory recorded in the workdir (`backend.json`), else the local one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::state_path;
use crate::cli::GlobalArgs;
use crate::engine::lock::{LockError, RunLock};
use crate::exit;
use crate::inventory::{Loaded, StateBackendKind};
use crate::state::kubernetes::{KubeBackend, KubeStateConfig, LeaseError, LeaseLock};
use crate::state::{LocalBackend, State, StateBackend};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Where {
    Local(PathBuf),
    Kube(KubeStateConfig),
}

impl std::fmt::Display for Where {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Where::Local(p) => write!(f, "local ({})", p.display()),
            Where::Kube(k) => write!(
                f,
                "kubernetes (Secret {}/{} through {})",
                k.namespace,
                k.name,
                k.kubeconfig.display()
            ),
        }
    }
}

fn record_path(workdir: &Path) -> PathBuf {
    workdir.join("backend.json")
}

pub fn from_inventory(g: &GlobalArgs, loaded: &Loaded) -> Where {
    let st = &loaded.inventory.state;
    match (&st.backend, &st.kubernetes) {
        (StateBackendKind::Kubernetes, Some(k)) => Where::Kube(KubeStateConfig::from_inventory(
            k,
            &loaded.inventory.metadata.name,
            &loaded.base_dir,
        )),
        _ => Where::Local(state_path(&g.workdir)),
    }
}

/// The backend the workdir's last run used.
pub fn recorded(g: &GlobalArgs) -> Where {
    std::fs::read(record_path(&g.workdir))
        .ok()
        .and_then(|b| serde_json::from_slice::<KubeStateConfig>(&b).ok())
        .map(Where::Kube)
        .unwrap_or_else(|| Where::Local(state_path(&g.workdir)))
}

/// Remember a kubernetes backend for commands without an inventory; a local
/// one is the default and needs no note.
pub fn remember(g: &GlobalArgs, w: &Where) {
    let path = record_path(&g.workdir);
    match w {
        Where::Kube(k) if g.workdir.is_dir() => {
            let bytes = serde_json::to_vec_pretty(k).unwrap_or_default();
            if let Err(e) = crate::util::write_atomic(&path, &bytes, 0o600) {
                tracing::warn!("cannot record the state backend in {}: {e}", path.display());
            }
        }
        Where::Kube(_) => {}
        Where::Local(_) => {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A single-threaded runtime for commands that only read.
pub fn small_runtime() -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            exit::STATE_ERROR
        })
}

/// The backend itself (for a kubernetes one: a client to its cluster).
pub async fn open(w: &Where) -> Result<Arc<dyn StateBackend>, String> {
    match w {
        Where::Local(path) => Ok(Arc::new(LocalBackend::new(path.clone()))),
        Where::Kube(k) => {
            let client = k
                .client()
                .await
                .map_err(|e| format!("state backend: {e} (hint: check state.kubernetes.kubeconfig)"))?;
            Ok(Arc::new(KubeBackend::new(&client, k)))
        }
    }
}

/// Read the state where it lives, printing the problem.
pub fn load_blocking(w: &Where) -> Result<State, u8> {
    if let Where::Local(path) = w {
        // No runtime for the common case.
        return State::load(path).map_err(|e| {
            eprintln!("error: {e}");
            eprintln!("hint: the state file records what was installed: repair or restore it; deleting it makes nautes-install forget what it created");
            exit::STATE_ERROR
        });
    }
    let rt = small_runtime()?;
    rt.block_on(async {
        let backend = open(w).await.map_err(|e| {
            eprintln!("error: {e}");
            exit::STATE_ERROR
        })?;
        backend.load().await.map_err(|e| {
            eprintln!("error: {e}");
            exit::STATE_ERROR
        })
    })
}

/// The run lock of either backend, held until released or dropped.
pub enum Held {
    File(RunLock),
    Lease(LeaseLock),
}

impl Held {
    /// Who held the lock before this run and left without releasing it.
    pub fn stale(&self) -> Option<String> {
        match self {
            Held::File(l) => l.stale.as_ref().map(|h| h.to_string()),
            Held::Lease(l) => l.stale.clone(),
        }
    }

    pub async fn release(self) {
        match self {
            Held::File(l) => drop(l),
            Held::Lease(l) => {
                if let Err(e) = l.release().await {
                    eprintln!("warning: {e}; it expires by itself");
                }
            }
        }
    }
}

/// Take the lock of `w` and open its backend, printing why not.
pub async fn lock_and_open(g: &GlobalArgs, w: &Where, command: &str) -> Result<(Held, Arc<dyn StateBackend>), u8> {
    match w {
        Where::Local(path) => {
            let lock = match RunLock::acquire(&g.workdir, command) {
                Ok(l) => l,
                Err(LockError::Held { holder, path }) => {
                    eprintln!("error: another nautes-install is running in this workdir: {holder}");
                    eprintln!(
                        "hint: wait for it to finish, or stop it; the lock ({}) is released when that process exits",
                        path.display()
                    );
                    return Err(exit::LOCKED);
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return Err(exit::STATE_ERROR);
                }
            };
            Ok((Held::File(lock), Arc::new(LocalBackend::new(path.clone()))))
        }
        Where::Kube(k) => {
            let client = k.client().await.map_err(|e| {
                eprintln!("error: state backend: {e}");
                eprintln!("hint: check state.kubernetes.kubeconfig and context");
                exit::STATE_ERROR
            })?;
            let backend = KubeBackend::new(&client, k);
            match LeaseLock::acquire(&client, k, backend.lost_flag()).await {
                Ok(lock) => Ok((Held::Lease(lock), Arc::new(backend))),
                Err(LeaseError::Held { place, holder, expires }) => {
                    eprintln!("error: another nautes-install holds the state lock (Lease {place}): {holder}, until {expires} unless renewed");
                    eprintln!(
                        "hint: wait for it to finish; if that run is gone for good, the lock expires by itself, or run `nautes-install force-unlock '{holder}'`"
                    );
                    Err(exit::LOCKED)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    eprintln!("hint: the namespace must exist and the kubeconfig's user may get, create and update Leases and Secrets there");
                    Err(exit::STATE_ERROR)
                }
            }
        }
    }
}
