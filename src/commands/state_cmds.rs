//! `force-unlock` and `migrate-state`: the commands that handle the state
//! and its lock themselves, for either backend.

use std::path::Path;

use super::backend::{self, Where};
use super::{load_and_plan, state_path};
use crate::cli::{BackendChoice, GlobalArgs};
use crate::exit;
use crate::state::kubernetes::{self, KubeStateConfig};

pub fn force_unlock(g: &GlobalArgs, id: &str, inventory: Option<&Path>) -> u8 {
    let place = match inventory {
        Some(file) => match load_and_plan(g, file) {
            Ok((loaded, _)) => backend::from_inventory(g, &loaded),
            Err(code) => return code,
        },
        None => backend::recorded(g),
    };
    match &place {
        Where::Local(_) => force_unlock_local(g, id),
        Where::Kube(k) => {
            let rt = match backend::small_runtime() {
                Ok(r) => r,
                Err(code) => return code,
            };
            let result = rt.block_on(async {
                let client = k.client().await?;
                kubernetes::force_unlock(&client, k, id).await
            });
            match result {
                Ok(None) => {
                    eprintln!(
                        "Unlocked: {id} no longer holds the state lock (Lease {}/{}).",
                        k.namespace, k.name
                    );
                    exit::OK
                }
                Ok(Some(holder)) if holder.is_empty() => {
                    eprintln!(
                        "The state lock (Lease {}/{}) is not held: nothing to unlock.",
                        k.namespace, k.name
                    );
                    exit::OK
                }
                Ok(Some(holder)) => {
                    eprintln!("error: the state lock is held by {holder}, not by {id}; left alone");
                    eprintln!("hint: pass the holder exactly as shown, and only once you know that run is gone");
                    exit::USAGE
                }
                Err(e) => {
                    eprintln!("error: state lock (Lease {}/{}): {e}", k.namespace, k.name);
                    exit::STATE_ERROR
                }
            }
        }
    }
}

/// A local lock is an OS file lock, which dies with its holder: a live
/// holder cannot be unlocked, and a dead one left only its note.
fn force_unlock_local(g: &GlobalArgs, id: &str) -> u8 {
    let names = |h: &crate::engine::lock::Holder| id.ends_with(&format!("{} pid {}", h.host, h.pid));
    if let Some(h) = crate::engine::lock::current_holder(&g.workdir) {
        eprintln!("error: the workdir lock is held by a live process: {h}");
        eprintln!(
            "hint: a local lock ends with its process; stop pid {} on {} instead{}",
            h.pid,
            h.host,
            if names(&h) { "" } else { " (and it is not the ID given)" }
        );
        return exit::LOCKED;
    }
    let note = std::fs::read(g.workdir.join("lock")).unwrap_or_default();
    match serde_json::from_slice::<crate::engine::lock::Holder>(&note) {
        Ok(h) if names(&h) => match crate::engine::lock::RunLock::acquire(&g.workdir, "force-unlock") {
            // Taking and dropping the lock clears the note.
            Ok(lock) => {
                drop(lock);
                eprintln!("Unlocked: removed the note left by {h}.");
                exit::OK
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::LOCKED
            }
        },
        Ok(h) => {
            eprintln!("error: the workdir's lock note names {h}, not {id}; left alone");
            exit::USAGE
        }
        Err(_) => {
            eprintln!("The workdir lock is not held: nothing to unlock.");
            exit::OK
        }
    }
}

pub fn migrate_state(g: &GlobalArgs, file: &Path, to: BackendChoice) -> u8 {
    let (loaded, _) = match load_and_plan(g, file) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let Some(k) = &loaded.inventory.state.kubernetes else {
        eprintln!("error: `state.kubernetes` is not set in {}", loaded.file.display());
        eprintln!("hint: add `state: {{ kubernetes: {{ kubeconfig: PATH, namespace: NAME }} }}`: it names the cluster to move to or from");
        return exit::USAGE;
    };
    if let Err(e) = std::fs::create_dir_all(&g.workdir) {
        eprintln!("error: cannot create workdir {}: {e}", g.workdir.display());
        return exit::STATE_ERROR;
    }
    let kube = Where::Kube(KubeStateConfig::from_inventory(
        k,
        &loaded.inventory.metadata.name,
        &loaded.base_dir,
    ));
    let local = Where::Local(state_path(&g.workdir));
    let (from, into) = match to {
        BackendChoice::Kubernetes => (local, kube),
        BackendChoice::Local => (kube, local),
    };
    let rt = match backend::small_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    rt.block_on(async {
        let (from_lock, source) = backend::lock_and_open(g, &from, "migrate-state").await?;
        let (into_lock, target) = match backend::lock_and_open(g, &into, "migrate-state").await {
            Ok(x) => x,
            Err(code) => {
                from_lock.release().await;
                return Err(code);
            }
        };
        let code = migrate(g, &from, &into, &*source, &*target).await;
        into_lock.release().await;
        from_lock.release().await;
        code
    })
    .unwrap_or_else(|code| code)
}

async fn migrate(
    g: &GlobalArgs,
    from: &Where,
    into: &Where,
    source: &dyn crate::state::StateBackend,
    target: &dyn crate::state::StateBackend,
) -> Result<u8, u8> {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("error: {e}");
        exit::STATE_ERROR
    };
    let state = source.load().await.map_err(|e| fail(&e))?;
    let existing = target.load().await.map_err(|e| fail(&e))?;
    if !existing.steps.is_empty() && !g.yes {
        eprintln!(
            "error: {} already holds a state with {} steps; not replaced",
            target.describe(),
            existing.steps.len()
        );
        eprintln!("hint: pass --yes to replace it with the one from {}", source.describe());
        return Err(exit::USAGE);
    }
    // The same serialisation the store uses, so a state moved there and
    // back is the same bytes.
    let bytes = serde_json::to_vec_pretty(&state).map_err(|e| fail(&e))?;
    target.write(bytes).await.map_err(|e| fail(&e))?;
    // Only once the target holds it: the source is retired, so that one
    // place is the truth (a local file is kept aside as a backup).
    match from {
        Where::Local(path) if path.exists() => {
            let aside = path.with_extension("json.migrated");
            std::fs::rename(path, &aside).map_err(|e| fail(&e))?;
            eprintln!("The local state file is kept as {}.", aside.display());
        }
        Where::Local(_) => {}
        Where::Kube(k) => {
            let client = k.client().await.map_err(|e| fail(&e))?;
            kubernetes::delete_state(&client, k).await.map_err(|e| fail(&e))?;
        }
    }
    backend::remember(g, into);
    eprintln!(
        "Moved the state ({} steps) from {} to {}.",
        state.steps.len(),
        source.describe(),
        target.describe()
    );
    if let Where::Kube(_) = into {
        eprintln!("hint: set `state.backend: kubernetes` in the inventory so the next runs use it");
    } else {
        eprintln!("hint: set `state.backend: local` in the inventory so the next runs use it");
    }
    Ok(exit::OK)
}
