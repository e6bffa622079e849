//! Vault configured through its HTTP API: initialised if it is not (key
//! shares and threshold from the inventory, keys optionally PGP-encrypted),
//! unsealed whenever it is found sealed (a Vault restart is healed by the
//! next run), then the KV v2 engines, AppRole auth, the Nautes policies and
//! the vault-proxy role. Every item is read first and written only when it
//! differs, so a run that finds everything in place writes nothing. The
//! step asks to be checked on every run (a restart is not an inventory
//! change). Unseal keys and the root token go to separate 0600 files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::catalog;
use crate::drivers::vault::Vault;
use crate::engine::{Difference, Handler, StepContext, StepError};
use crate::inventory::spans::push_key;
use crate::inventory::{Diagnostic, Loaded, Placement, SecretRef};
use crate::plan::diff::REFRESH_AFTER;
use crate::plan::{Step, StepSpec};
use crate::secret::{write_private, Secret};
use crate::util::unix_now;
use crate::wait::{Poll, Wait};

pub const KIND: &str = "vault-configure";
pub const STEP_ID: &str = "vault/configure";
/// Installs Vault on its host (placement `host`); see service_hosts.
pub const HOST_STEP_ID: &str = "vault/host";
/// KV v2 engines Nautes keeps its secrets in.
const KV_ENGINES: [&str; 5] = ["pki", "git", "repo", "cluster", "tenant"];
pub const APPROLE_MOUNT: &str = "approle";
pub const PROXY_ROLE: &str = "vault-proxy";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VaultSpec {
    pub url: String,
    /// Admin token; without one, the root token from our own init is used.
    pub token: Option<SecretRef>,
    pub ca_file: Option<PathBuf>,
    pub key_shares: u32,
    pub key_threshold: u32,
    pub pgp_keys: Vec<String>,
    /// Policy name -> HCL.
    pub policies: BTreeMap<String, String>,
}

impl StepSpec for VaultSpec {
    const KIND: &'static str = KIND;
}

fn number(
    loaded: &Loaded,
    values: &serde_json::Map<String, Value>,
    key: &str,
    default: u32,
) -> Result<u32, Diagnostic> {
    match values.get(key) {
        None => Ok(default),
        Some(v) => v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
            let path = push_key("components.vault.values", key);
            Diagnostic::error(&path, format!("`{key}` must be a whole number, not {v}")).at(loaded.spans.value(&path))
        }),
    }
}

pub fn plan(loaded: &Loaded, steps: &mut Vec<Step>) -> Result<(), Vec<Diagnostic>> {
    let Some(vault) = loaded.inventory.components.enabled_one(catalog::VAULT.key) else {
        return Ok(());
    };
    let Some(target) = target(loaded) else {
        return Ok(());
    };
    let shares = number(loaded, &vault.values, "keyShares", 5).map_err(|d| vec![d])?;
    let threshold = number(loaded, &vault.values, "keyThreshold", 3).map_err(|d| vec![d])?;
    if threshold == 0 || threshold > shares {
        return Err(vec![Diagnostic::error(
            "components.vault.values.keyThreshold",
            format!("a threshold of {threshold} cannot work with {shares} key shares"),
        )
        .with_hint("use 1 <= keyThreshold <= keyShares")
        .at(loaded.spans.value("components.vault.values"))]);
    }
    let pgp_keys: Vec<String> = match vault.values.get("pgpKeys") {
        None => Vec::new(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
            vec![Diagnostic::error(
                "components.vault.values.pgpKeys",
                "`pgpKeys` must be a list of base64 public keys",
            )]
        })?,
    };
    if !pgp_keys.is_empty() && pgp_keys.len() as u32 != shares {
        return Err(vec![Diagnostic::error(
            "components.vault.values.pgpKeys",
            format!("{} PGP keys for {shares} key shares", pgp_keys.len()),
        )
        .with_hint("give one PGP key per key share")]);
    }
    let rendered = crate::templates::render("vault/policies.yaml", &json!({}))
        .map_err(|e| vec![Diagnostic::error("components.vault", e)])?;
    let policies: BTreeMap<String, String> = serde_yaml::from_str(&rendered)
        .map_err(|e| vec![Diagnostic::error("components.vault", format!("policies template: {e}"))])?;
    let spec = VaultSpec {
        url: target.url.clone(),
        token: target.token.clone(),
        ca_file: target.ca_file.clone(),
        key_shares: shares,
        key_threshold: threshold,
        pgp_keys,
        policies,
    };
    let mut needs = Vec::new();
    if let Some(host_step) = &target.host_step {
        needs.push(host_step.clone());
        needs.push(crate::components::certificates::STEP_ID.to_string());
    }
    let title = vault.vault_distribution().title();
    steps.push(Step::of(STEP_ID, format!("{title} at {}", target.url), &spec).needs(needs));
    Ok(())
}

/// How to reach the Vault this install configures: one we put on a host
/// (TLS from our PKI, after its install step) or the user's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VaultTarget {
    pub url: String,
    pub token: Option<SecretRef>,
    /// `None` with a host step: our CA, from the PKI step's outputs.
    pub ca_file: Option<PathBuf>,
    pub host_step: Option<String>,
}

/// The Vault of this inventory that we configure, if any.
pub fn target(loaded: &Loaded) -> Option<VaultTarget> {
    let vault = loaded.inventory.components.enabled_one(catalog::VAULT.key)?;
    match (vault.placement, &vault.external, &vault.host) {
        (Placement::External, Some(external), _) => Some(VaultTarget {
            url: external.url.clone(),
            token: external.token.clone(),
            ca_file: external
                .ca_file
                .as_ref()
                .map(|p| std::path::absolute(loaded.resolve(p)).unwrap_or_else(|_| loaded.resolve(p))),
            host_step: None,
        }),
        (Placement::Host, _, Some(host)) => {
            let address = crate::steps::hosts::find(loaded, host)?.address.clone();
            Some(VaultTarget {
                url: format!("https://{address}:8200"),
                token: None,
                ca_file: None,
                host_step: Some(HOST_STEP_ID.to_string()),
            })
        }
        _ => None,
    }
}

/// The CA to trust for a target: its own file, or our PKI's CA.
fn target_ca(ctx: &StepContext, ca_file: Option<&Path>) -> Result<Option<Vec<u8>>, StepError> {
    let path = match ca_file {
        Some(p) => p.to_path_buf(),
        None => match ctx.needs_outputs.get(crate::components::certificates::STEP_ID) {
            Some(pki) => PathBuf::from(pki["ca"]["cert"].as_str().unwrap_or_default()),
            None => return Ok(None),
        },
    };
    std::fs::read(&path)
        .map(Some)
        .map_err(|e| StepError::new(format!("cannot read the CA for Vault, {}: {e}", path.display())))
}

/// A client for the Vault `vault/configure` set up, and the token to use
/// (for steps that keep secrets in it, which need `vault/configure` and `pki`).
pub fn connect(ctx: &StepContext, target: &VaultTarget) -> Result<(Vault, Secret), StepError> {
    let ca = target_ca(ctx, target.ca_file.as_deref())?;
    let http = ctx.limits.http;
    let vault = Vault::new(&target.url, ca.as_deref(), http).map_err(StepError::new)?;
    let token = admin_token(ctx, target.token.as_ref())?;
    Ok((vault, token))
}

/// Where the unseal keys and root token we got from `init` live.
fn secrets_dir(ctx: &StepContext) -> PathBuf {
    ctx.outputs_dir.join("vault")
}

fn key_file(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("unseal-key-{}", i + 1))
}

fn write_secret(path: &Path, value: &Secret) -> Result<(), StepError> {
    write_private(path, value).map_err(|e| StepError::new(format!("cannot write {}: {e}", path.display())))
}

/// Reads and writes Vault configuration, counting the writes a run makes
/// (for its outputs and the user). Shared by the steps that configure Vault.
pub struct Writer<'a> {
    vault: &'a Vault,
    token: &'a Secret,
    pub writes: Vec<String>,
}

impl<'a> Writer<'a> {
    pub fn new(vault: &'a Vault, token: &'a Secret) -> Self {
        Writer {
            vault,
            token,
            writes: Vec::new(),
        }
    }

    pub async fn read(&self, path: &str) -> Result<Option<Value>, StepError> {
        self.vault.read(path, self.token).await.map_err(StepError::new)
    }

    pub async fn write(&mut self, path: &str, body: Value) -> Result<(), StepError> {
        self.vault
            .write(path, self.token, &body)
            .await
            .map_err(StepError::new)?;
        self.writes.push(path.to_string());
        Ok(())
    }

    /// Delete `path` (nothing there is fine), counted as a write.
    pub async fn delete(&mut self, path: &str) -> Result<(), StepError> {
        self.vault.delete(path, self.token).await.map_err(StepError::new)?;
        self.writes.push(format!("DELETE {path}"));
        Ok(())
    }

    /// Write `wanted` at `path` unless every one of its fields already has
    /// that value (Vault returns roles with defaults we do not set).
    pub async fn ensure_fields(&mut self, path: &str, wanted: Value) -> Result<(), StepError> {
        let live = self.read(path).await?.unwrap_or_default();
        if differing_field(&live["data"], &wanted).is_some() {
            self.write(path, wanted).await?;
        }
        Ok(())
    }
}

/// Make sure Vault is initialised and unsealed; the token to configure with.
async fn open_vault(ctx: &StepContext, spec: &VaultSpec, vault: &Vault) -> Result<(Secret, bool), StepError> {
    let dir = secrets_dir(ctx);
    let mut status = vault.seal_status().await.map_err(StepError::new)?;
    let mut initialised_now = false;
    if !status.initialized {
        ctx.progress("initialising Vault");
        let init = vault
            .init(spec.key_shares, spec.key_threshold, &spec.pgp_keys)
            .await
            .map_err(StepError::new)?;
        for (i, key) in init.keys.iter().enumerate() {
            write_secret(&key_file(&dir, i), key)?;
        }
        write_secret(&dir.join("root-token"), &init.root_token)?;
        initialised_now = true;
        status = vault.seal_status().await.map_err(StepError::new)?;
    }
    if status.sealed {
        if !spec.pgp_keys.is_empty() {
            return Err(StepError::new(format!(
                "Vault at {} is sealed and its unseal keys are PGP-encrypted: unseal it with `vault operator unseal` \
                 using your decrypted keys, then run again",
                vault.url()
            )));
        }
        ctx.progress("unsealing Vault");
        let mut used = 0;
        for i in 0..spec.key_shares as usize {
            let Ok(key) = std::fs::read_to_string(key_file(&dir, i)) else {
                continue;
            };
            status = vault.unseal(&Secret::new(key.trim())).await.map_err(StepError::new)?;
            used += 1;
            if !status.sealed {
                break;
            }
        }
        if status.sealed && used == 0 {
            // Vault hands its keys out once, in the answer to `init`: none
            // kept means it was initialised by someone else, or this
            // installer was killed while that answer was on its way.
            return Err(StepError::new(format!(
                "Vault at {} is initialised and sealed, and no unseal keys are kept under {}: \
                 it was initialised outside this installer, or a run was killed while Vault's init \
                 was answering (its keys cannot be asked for again). Unseal it by hand and run again, \
                 or wipe Vault's storage so the installer initialises it afresh",
                vault.url(),
                dir.display()
            )));
        }
        if status.sealed {
            return Err(StepError::new(format!(
                "Vault at {} is sealed and the {used} unseal keys under {} do not open it (threshold {}); \
                 unseal it by hand and run again",
                vault.url(),
                dir.display(),
                status.t
            )));
        }
    }
    wait_for_active(ctx, vault).await?;
    let token = admin_token(ctx, spec.token.as_ref())?;
    Ok((token, initialised_now))
}

/// With integrated storage a server just initialised or unsealed serves
/// nothing but status until raft has elected a leader ("local node not
/// active but active cluster node not found", HTTP 500); on a loaded host
/// that takes seconds. Wait for it, up to `timeouts.rollout`.
async fn wait_for_active(ctx: &StepContext, vault: &Vault) -> Result<(), StepError> {
    let mut said = false;
    Wait::for_(
        format!("Vault at {} to have an active node", vault.url()),
        ctx.limits.rollout,
    )
    .every(std::time::Duration::from_millis(250))
    .hint("check its log (with integrated storage a lone node elects itself)")
    .until(|| {
        if !std::mem::replace(&mut said, true) {
            ctx.progress("waiting until Vault has an active node");
        }
        async {
            Ok::<_, StepError>(match vault.leader().await {
                Ok(l) if l.has_active() => Poll::Done(()),
                Ok(_) => Poll::Pending("unsealed, no active node yet".to_string()),
                Err(e) => Poll::Pending(e),
            })
        }
    })
    .await
}

/// The token to configure Vault with: the inventory's, or the root token
/// kept from the run that initialised it. Other steps that write to Vault
/// (GitLab credentials) use it too.
pub fn admin_token(ctx: &StepContext, token: Option<&SecretRef>) -> Result<Secret, StepError> {
    match token {
        Some(r) => r
            .resolve(&ctx.base_dir)
            .map_err(|e| StepError::new(format!("components.vault.external.token: {e}"))),
        None => {
            let path = secrets_dir(ctx).join("root-token");
            let text = std::fs::read_to_string(&path).map_err(|e| {
                StepError::new(format!(
                    "no Vault token: set components.vault.external.token, or keep {} from the run that initialised it ({e})",
                    path.display()
                ))
            })?;
            Ok(Secret::new(text.trim()))
        }
    }
}

/// One write `configure` would make: what it is, how it differs, and the write.
#[derive(Debug)]
struct Change {
    what: String,
    change: crate::engine::Change,
    /// The field that differs, for a changed item.
    field: Option<String>,
    path: String,
    body: Value,
}

/// The first field of `wanted` whose live value differs (Vault returns
/// items with defaults we do not set, so only our fields count).
pub fn differing_field(live: &Value, wanted: &Value) -> Option<String> {
    wanted
        .as_object()
        .into_iter()
        .flatten()
        .find(|(k, v)| &live[k.as_str()] != *v)
        .map(|(k, _)| k.clone())
}

/// What differs between Vault and what this install configures: the KV
/// engines, the AppRole auth method, the policies and vault-proxy's role,
/// each read once. A mount of the wrong type is an error (it is someone
/// else's; we do not replace it).
async fn changes(w: &Writer<'_>, spec: &VaultSpec) -> Result<Vec<Change>, StepError> {
    use crate::engine::Change::{Changed, Missing};
    let mut out = Vec::new();
    let mounts = w.read("sys/mounts").await?.unwrap_or_default();
    for engine in KV_ENGINES {
        let live = &mounts["data"][format!("{engine}/")];
        if live.is_null() {
            out.push(Change {
                what: format!("Vault secrets engine {engine}/"),
                change: Missing,
                field: None,
                path: format!("sys/mounts/{engine}"),
                body: json!({"type": "kv", "options": {"version": "2"}}),
            });
        } else if live["type"] != "kv" || live["options"]["version"] != "2" {
            return Err(StepError::new(format!(
                "Vault path {engine}/ is already a {} engine (options {}), not KV v2; Nautes needs it as KV v2",
                live["type"], live["options"]
            )));
        }
    }
    let auths = w.read("sys/auth").await?.unwrap_or_default();
    let live = &auths["data"][format!("{APPROLE_MOUNT}/")];
    let approle_mounted = !live.is_null();
    if live.is_null() {
        out.push(Change {
            what: format!("Vault auth method {APPROLE_MOUNT}/"),
            change: Missing,
            field: None,
            path: format!("sys/auth/{APPROLE_MOUNT}"),
            body: json!({"type": "approle"}),
        });
    } else if live["type"] != "approle" {
        return Err(StepError::new(format!(
            "Vault auth path {APPROLE_MOUNT}/ is already used by a {} method",
            live["type"]
        )));
    }
    for (name, hcl) in &spec.policies {
        let path = format!("sys/policies/acl/{name}");
        let live = w.read(&path).await?;
        let change = match live.as_ref().and_then(|v| v["data"]["policy"].as_str()) {
            Some(text) if text == hcl.as_str() => continue,
            Some(_) => (Changed, Some("policy".to_string())),
            None => (Missing, None),
        };
        out.push(Change {
            what: format!("Vault policy {name}"),
            change: change.0,
            field: change.1,
            path,
            body: json!({ "policy": hcl }),
        });
    }
    let role_path = format!("auth/{APPROLE_MOUNT}/role/{PROXY_ROLE}");
    let wanted = json!({"token_policies": [PROXY_ROLE], "token_ttl": 3600, "token_max_ttl": 14400});
    // Without the auth method there is no role to read yet.
    let live = match approle_mounted {
        true => w.read(&role_path).await?,
        false => None,
    };
    let change = match &live {
        None => Some((Missing, None)),
        Some(live) => differing_field(&live["data"], &wanted).map(|f| (Changed, Some(f))),
    };
    if let Some((change, field)) = change {
        out.push(Change {
            what: format!("Vault AppRole role {PROXY_ROLE}"),
            change,
            field,
            path: role_path,
            body: wanted,
        });
    }
    Ok(out)
}

/// The engines, auth method, policies and role, each written only if it differs.
async fn configure(w: &mut Writer<'_>, spec: &VaultSpec) -> Result<(), StepError> {
    for c in changes(w, spec).await? {
        w.write(&c.path, c.body).await?;
    }
    Ok(())
}

pub struct VaultHandler;

#[async_trait]
impl Handler for VaultHandler {
    type Spec = VaultSpec;

    async fn apply(&self, ctx: &StepContext, spec: &VaultSpec) -> Result<Value, StepError> {
        let ca = target_ca(ctx, spec.ca_file.as_deref())?;
        let http = ctx.limits.http;
        let vault = Vault::new(&spec.url, ca.as_deref(), http).map_err(StepError::new)?;
        let (token, initialised_now) = open_vault(ctx, spec, &vault).await?;
        let mut writer = Writer::new(&vault, &token);
        configure(&mut writer, spec).await?;
        if !writer.writes.is_empty() {
            ctx.progress(format!("Vault: {} changes", writer.writes.len()));
        }
        let dir = secrets_dir(ctx);
        Ok(json!({
            "url": spec.url,
            "initialisedNow": initialised_now,
            "secrets": dir,
            "written": writer.writes,
            // Checked again on every run: a restarted Vault is sealed without any inventory change.
            REFRESH_AFTER: unix_now(),
        }))
    }

    /// Read-only: a sealed Vault is reported, not unsealed.
    async fn drift(&self, ctx: &StepContext, spec: &VaultSpec) -> Result<Option<Vec<Difference>>, StepError> {
        let ca = target_ca(ctx, spec.ca_file.as_deref())?;
        let vault = Vault::new(&spec.url, ca.as_deref(), ctx.limits.http).map_err(StepError::new)?;
        let status = vault.seal_status().await.map_err(StepError::new)?;
        if !status.initialized || status.sealed {
            return Ok(Some(vec![Difference {
                object: format!("Vault at {}", spec.url),
                change: crate::engine::Change::Changed,
                field: Some(
                    if status.initialized {
                        "sealed"
                    } else {
                        "not initialised"
                    }
                    .to_string(),
                ),
            }]));
        }
        let token = admin_token(ctx, spec.token.as_ref())?;
        let found = changes(&Writer::new(&vault, &token), spec).await?;
        Ok(Some(
            found
                .into_iter()
                .map(|c| Difference {
                    object: c.what,
                    change: c.change,
                    field: c.field,
                })
                .collect(),
        ))
    }

    async fn destroy(&self, _ctx: &StepContext, _spec: &VaultSpec, _outputs: &Value) -> Result<(), StepError> {
        // An existing Vault is the user's: its engines and data are left, and
        // so are the unseal keys and root token, without which it cannot be opened.
        Ok(())
    }
}

/// Vault's configuration: mounts, policies, AppRoles.
pub struct VaultConfiguration;

impl super::Component for VaultConfiguration {
    fn plan(
        &self,
        loaded: &crate::inventory::Loaded,
        steps: &mut Vec<crate::plan::Step>,
    ) -> Result<(), Vec<crate::inventory::Diagnostic>> {
        plan(loaded, steps)
    }

    fn handlers(&self, registry: &mut crate::engine::Registry) {
        registry.add(VaultHandler);
    }
}
