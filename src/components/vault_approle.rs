//! AppRole secret ids we hand out (vault-proxy's), made crash-safe. A
//! secret id is shown once, by the create; one whose answer was lost can
//! never be used, and ours never expire, so it would stay a live
//! credential for good. So each create is recorded first (engine/intents.rs)
//! with a marker that Vault keeps as the secret id's metadata; a later run
//! lists the role's accessors, finds the marked one and destroys it, and
//! destroys any other we made and no longer use. Secret ids the records do
//! not name (made by hand, by another tool) are never touched.

use serde_json::{json, Value};

use crate::drivers::vault::Vault;
use crate::engine::{Intent, Intents, StepError};
use crate::secret::Secret;

/// The records of our secret-id creates.
pub const RECORD: &str = "approle-secret-id";
/// The metadata key our secret ids carry their intent marker under.
const MARKER_KEY: &str = "nautes_install_intent";

fn failed(what: &str) -> impl FnOnce(String) -> StepError + '_ {
    move |e| StepError::new(format!("{what}: {e}"))
}

/// What Vault knows of the secret id behind `accessor`; `None` once destroyed.
async fn lookup(vault: &Vault, token: &Secret, role: &str, accessor: &str) -> Result<Option<Value>, StepError> {
    vault
        .write(
            &format!("{role}/secret-id-accessor/lookup"),
            token,
            &json!({"secret_id_accessor": accessor}),
        )
        .await
        .map_err(failed("looking up an AppRole secret id"))
        .map(|v| v.map(|v| v["data"].clone()))
}

async fn destroy(vault: &Vault, token: &Secret, role: &str, accessor: &str) -> Result<(), StepError> {
    vault
        .write(
            &format!("{role}/secret-id-accessor/destroy"),
            token,
            &json!({"secret_id_accessor": accessor}),
        )
        .await
        .map(|_| ())
        .map_err(failed("destroying an AppRole secret id we no longer use"))
}

/// The live accessors an unanswered create with `record`'s marker made.
async fn made_by(
    vault: &Vault,
    token: &Secret,
    role: &str,
    record: &Intent,
    accessors: &[String],
) -> Result<Vec<String>, StepError> {
    let mut found = Vec::new();
    for accessor in accessors {
        if let Some(data) = lookup(vault, token, role, accessor).await? {
            if data["metadata"][MARKER_KEY].as_str() == Some(record.marker.as_str()) {
                found.push(accessor.clone());
            }
        }
    }
    Ok(found)
}

/// Destroy every secret id of `role` the records name, except `keep`.
async fn tidy(
    intents: &Intents,
    vault: &Vault,
    token: &Secret,
    role: &str,
    keep: Option<&str>,
) -> Result<(), StepError> {
    let records = intents.list(RECORD);
    let mut listed: Option<Vec<String>> = None;
    for record in records {
        let candidates = match record.made.as_ref().and_then(Value::as_str) {
            Some(accessor) => match lookup(vault, token, role, accessor).await? {
                Some(_) => vec![accessor.to_string()],
                None => Vec::new(),
            },
            None => {
                if listed.is_none() {
                    listed = Some(
                        vault
                            .list(&format!("{role}/secret-id"), token)
                            .await
                            .map_err(failed("listing the AppRole's secret ids"))?,
                    );
                }
                made_by(vault, token, role, &record, listed.as_deref().unwrap_or_default()).await?
            }
        };
        let mut kept = false;
        for accessor in candidates {
            if Some(accessor.as_str()) == keep {
                kept = true;
                if record.made.is_none() {
                    intents.settle(RECORD, &record.marker, json!(accessor)).await?;
                }
            } else {
                destroy(vault, token, role, &accessor).await?;
            }
        }
        if !kept {
            intents.forget(RECORD, &record.marker).await?;
        }
    }
    Ok(())
}

/// The secret id to log in to `role` (`auth/<mount>/role/<name>`) with:
/// `in_use` (the one already handed out) when there is one, else a new one.
/// Either way, every other secret id we made for it is destroyed.
pub async fn secret_id(
    intents: &Intents,
    vault: &Vault,
    token: &Secret,
    role: &str,
    in_use: Option<Secret>,
) -> Result<Secret, StepError> {
    let records = intents.list(RECORD);
    if let Some(current) = in_use {
        // The usual re-run: one record, answered. Nothing to look up.
        if records.len() <= 1 && records.iter().all(|r| r.made.is_some()) {
            return Ok(current);
        }
        let accessor = vault
            .write(
                &format!("{role}/secret-id/lookup"),
                token,
                &json!({"secret_id": current.expose()}),
            )
            .await
            .map_err(failed("looking up the AppRole secret id in use"))?
            .and_then(|v| v["data"]["secret_id_accessor"].as_str().map(str::to_string));
        tidy(intents, vault, token, role, accessor.as_deref()).await?;
        return Ok(current);
    }
    tidy(intents, vault, token, role, None).await?;
    let intent = intents.begin(RECORD, json!({"role": role})).await?;
    let metadata = json!({MARKER_KEY: intent.marker}).to_string();
    // On any failure the record stays: the next run looks for the marker
    // and finds either nothing (then forgets it) or the secret id to destroy.
    let made = vault
        .write(&format!("{role}/secret-id"), token, &json!({"metadata": metadata}))
        .await
        .map_err(failed("making an AppRole secret id"))?
        .unwrap_or_default();
    let secret = made["data"]["secret_id"]
        .as_str()
        .map(Secret::new)
        .ok_or_else(|| StepError::new("Vault returned no AppRole secret id"))?;
    intents
        .settle(RECORD, &intent.marker, made["data"]["secret_id_accessor"].clone())
        .await?;
    Ok(secret)
}

/// Teardown: destroy every secret id of `role` the records name — the one
/// handed out and any whose answer a crash lost — and forget the records.
/// A role that is gone took its secret ids with it. The user's secret ids
/// on the role are never touched.
pub async fn destroy_ours(intents: &Intents, vault: &Vault, token: &Secret, role: &str) -> Result<(), StepError> {
    let records = intents.list(RECORD);
    if records.is_empty() {
        return Ok(());
    }
    let role_exists = vault
        .read(role, token)
        .await
        .map_err(failed("reading the AppRole role"))?
        .is_some();
    if role_exists {
        return tidy(intents, vault, token, role, None).await;
    }
    for record in records {
        intents.forget(RECORD, &record.marker).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Against the real OpenBao (`bao server -dev`), which must be there in
    //! CI (`CI=true`); elsewhere the test says it is skipped.

    use super::*;
    use crate::state::{State, StateStore};
    use std::time::Duration;

    struct Bao {
        child: std::process::Child,
        url: String,
    }

    impl Drop for Bao {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn bao_binary() -> Option<std::path::PathBuf> {
        let candidates = [
            std::env::var_os("NAUTES_BAO").map(std::path::PathBuf::from),
            Some("/opt/nautes-ci/bin/bao".into()),
        ];
        candidates.into_iter().flatten().find(|p| p.exists()).or_else(|| {
            std::env::var_os("PATH")
                .and_then(|path| std::env::split_paths(&path).map(|d| d.join("bao")).find(|p| p.exists()))
        })
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    async fn start_bao() -> Option<Bao> {
        let Some(bin) = bao_binary() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "OpenBao (`bao`) must be installed in CI"
            );
            eprintln!("skipped: no OpenBao binary (set NAUTES_BAO or put `bao` on PATH)");
            return None;
        };
        let port = free_port();
        let child = std::process::Command::new(bin)
            .args([
                "server",
                "-dev",
                &format!("-dev-listen-address=127.0.0.1:{port}"),
                "-dev-root-token-id=root",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start bao");
        let bao = Bao {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let vault = Vault::new(&bao.url, None, Duration::from_secs(5)).unwrap();
        for _ in 0..200 {
            if vault.seal_status().await.is_ok_and(|s| !s.sealed) {
                return Some(bao);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("bao -dev did not come up at {}", bao.url);
    }

    const ROLE: &str = "auth/approle/role/vault-proxy";

    async fn login_works(vault: &Vault, role_id: &str, secret: &Secret) -> bool {
        vault
            .write(
                "auth/approle/login",
                &Secret::new(""),
                &json!({"role_id": role_id, "secret_id": secret.expose()}),
            )
            .await
            .is_ok_and(|v| v.is_some_and(|v| v["auth"]["client_token"].is_string()))
    }

    /// What a run killed right after Vault answered leaves: the record, and
    /// a secret id carrying its marker that nobody ever received.
    async fn lose_an_answer(intents: &Intents, vault: &Vault, root: &Secret) -> Secret {
        let record = intents.begin(RECORD, json!({"role": ROLE})).await.unwrap();
        let lost = vault
            .write(
                &format!("{ROLE}/secret-id"),
                root,
                &json!({"metadata": json!({MARKER_KEY: record.marker}).to_string()}),
            )
            .await
            .unwrap()
            .unwrap();
        Secret::new(lost["data"]["secret_id"].as_str().unwrap())
    }

    #[tokio::test]
    async fn a_secret_id_whose_answer_was_lost_is_destroyed_and_replaced_others_are_left_and_teardown_destroys_ours() {
        let Some(bao) = start_bao().await else { return };
        let vault = Vault::new(&bao.url, None, Duration::from_secs(5)).unwrap();
        let root = Secret::new("root");
        vault
            .write("sys/auth/approle", &root, &json!({"type": "approle"}))
            .await
            .unwrap();
        vault
            .write(ROLE, &root, &json!({"token_policies": "default"}))
            .await
            .unwrap();
        let role_id = vault.read(&format!("{ROLE}/role-id"), &root).await.unwrap().unwrap()["data"]["role_id"]
            .as_str()
            .unwrap()
            .to_string();
        // Someone else's secret id on the same role.
        let theirs = vault
            .write(&format!("{ROLE}/secret-id"), &root, &json!({}))
            .await
            .unwrap()
            .unwrap();
        let theirs_accessor = theirs["data"]["secret_id_accessor"].as_str().unwrap().to_string();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let intents = Intents::new(StateStore::new(path.clone(), State::default()), "vault-proxy");

        // What a run killed right after Vault answered leaves.
        let lost_secret = lose_an_answer(&intents, &vault, &root).await;
        assert!(login_works(&vault, &role_id, &lost_secret).await);

        // The re-run: nothing in use, so a new one; the lost one is destroyed.
        let state = StateStore::new(path.clone(), State::load(&path).unwrap());
        let intents = Intents::new(state, "vault-proxy");
        let new = secret_id(&intents, &vault, &root, ROLE, None).await.unwrap();
        assert!(login_works(&vault, &role_id, &new).await);
        assert!(
            !login_works(&vault, &role_id, &lost_secret).await,
            "the lost secret id is still alive"
        );
        let mut accessors = vault.list(&format!("{ROLE}/secret-id"), &root).await.unwrap();
        accessors.sort();
        let records = intents.list(RECORD);
        assert_eq!(records.len(), 1, "{records:?}");
        let mine = records[0].made.as_ref().and_then(Value::as_str).unwrap().to_string();
        let mut expected = vec![theirs_accessor.clone(), mine.clone()];
        expected.sort();
        assert_eq!(accessors, expected, "exactly theirs and our one new secret id");

        // A re-run with it in use makes and destroys nothing.
        let again = secret_id(&intents, &vault, &root, ROLE, Some(new.clone()))
            .await
            .unwrap();
        assert_eq!(again.expose(), new.expose());
        assert_eq!(vault.list(&format!("{ROLE}/secret-id"), &root).await.unwrap().len(), 2);

        // Lost from the cluster (nothing in use): ours is replaced, theirs stays.
        let replaced = secret_id(&intents, &vault, &root, ROLE, None).await.unwrap();
        assert!(
            !login_works(&vault, &role_id, &new).await,
            "the replaced one still works"
        );
        assert!(login_works(&vault, &role_id, &replaced).await);
        let accessors = vault.list(&format!("{ROLE}/secret-id"), &root).await.unwrap();
        assert_eq!(accessors.len(), 2);
        assert!(accessors.contains(&theirs_accessor));
        assert!(!accessors.contains(&mine));
        let state = std::fs::read_to_string(&path).unwrap();
        assert!(!state.contains(replaced.expose()), "a secret id reached the state file");

        // Teardown after another lost answer: ours and the lost one are
        // destroyed, theirs stays, no record is left.
        let lost_secret = lose_an_answer(&intents, &vault, &root).await;
        destroy_ours(&intents, &vault, &root, ROLE).await.unwrap();
        assert_eq!(
            vault.list(&format!("{ROLE}/secret-id"), &root).await.unwrap(),
            vec![theirs_accessor.clone()]
        );
        assert!(!login_works(&vault, &role_id, &replaced).await);
        assert!(!login_works(&vault, &role_id, &lost_secret).await);
        assert!(intents.list(RECORD).is_empty());

        // A role someone removed took its secret ids along: the records go.
        intents.begin(RECORD, json!({"role": ROLE})).await.unwrap();
        vault.delete(ROLE, &root).await.unwrap();
        destroy_ours(&intents, &vault, &root, ROLE).await.unwrap();
        assert!(intents.list(RECORD).is_empty());
    }
}
