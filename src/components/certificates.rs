//! The installation's PKI: one CA (generated, or the user's), a wildcard
//! certificate for the ingress domain, server certificates for GitLab and
//! Vault on their hosts, and a client certificate for vault-proxy mTLS.
//! A certificate is issued again only when what it names changes, its files
//! were altered or removed, its CA changed, or it nears expiry (the step
//! records `refreshAfter`, so a plan picks it up on time). Keys are written
//! 0600 and never logged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::catalog;
use crate::engine::{Handler, StepContext, StepError};
use crate::inventory::{Loaded, Placement, SecretRef};
use crate::pki::{Ca, Issued, LeafRequest, Usage};
use crate::plan::diff::REFRESH_AFTER;
use crate::plan::{Step, StepSpec};
use crate::secret::write_private;
use crate::util::sha256_file;
use crate::util::unix_now;
use crate::util::write_atomic;

pub const KIND: &str = "pki";
pub const STEP_ID: &str = "pki";
/// Names of the certificates other components read from this step's outputs.
pub const INGRESS: &str = "ingress";
pub const VAULT_PROXY_CLIENT: &str = "vault-proxy-client";
pub const VAULT_PROXY_SERVER: &str = "vault-proxy-server";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserCaSpec {
    pub cert: PathBuf,
    pub key: SecretRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PkiSpec {
    pub ca: Option<UserCaSpec>,
    pub ca_name: String,
    pub validity_secs: u64,
    pub ca_validity_secs: u64,
    pub renew_before_secs: u64,
    pub certs: BTreeMap<String, LeafRequest>,
}

impl StepSpec for PkiSpec {
    const KIND: &'static str = KIND;
}

/// The server certificate of a component placed on one of our hosts.
fn host_certificate(loaded: &Loaded, component: &str, domain: Option<&str>) -> Option<LeafRequest> {
    let inv = &loaded.inventory;
    let c = inv.components.iter().find(|(k, _)| *k == component)?.1;
    if !c.enabled || c.placement != Placement::Host {
        return None;
    }
    let host = inv.hosts.iter().find(|h| Some(&h.name) == c.host.as_ref())?;
    let mut sans = Vec::new();
    if let Some(d) = domain {
        sans.push(format!("{component}.{d}"));
    }
    sans.push(host.name.clone());
    if host.address != host.name {
        sans.push(host.address.clone());
    }
    Some(LeafRequest {
        common_name: sans[0].clone(),
        sans,
        usage: Usage::Server,
    })
}

/// Every certificate the inventory calls for.
pub fn requests(loaded: &Loaded) -> BTreeMap<String, LeafRequest> {
    let inv = &loaded.inventory;
    let domain = inv.settings.domain.as_deref();
    let mut certs = BTreeMap::new();
    if let Some(d) = domain {
        certs.insert(
            INGRESS.to_string(),
            LeafRequest {
                common_name: d.to_string(),
                sans: vec![format!("*.{d}"), d.to_string()],
                usage: Usage::Server,
            },
        );
    }
    for component in ["gitlab", "vault"] {
        if let Some(r) = host_certificate(loaded, component, domain) {
            certs.insert(format!("{component}-server"), r);
        }
    }
    // Nautes reaches Vault through vault-proxy (mTLS) wherever Vault runs.
    let vault_used = inv.components.enabled(catalog::VAULT.key);
    if vault_used {
        certs.insert(
            VAULT_PROXY_CLIENT.to_string(),
            LeafRequest {
                common_name: "vault-proxy".into(),
                sans: Vec::new(),
                usage: Usage::Client,
            },
        );
        let sans: Vec<String> = [
            "vault-proxy",
            "vault-proxy.nautes",
            "vault-proxy.nautes.svc",
            "vault-proxy.nautes.svc.cluster.local",
        ]
        .into_iter()
        .map(str::to_string)
        .collect();
        certs.insert(
            VAULT_PROXY_SERVER.to_string(),
            LeafRequest {
                common_name: sans[2].clone(),
                sans,
                usage: Usage::Server,
            },
        );
    }
    certs
}

pub fn plan(loaded: &Loaded, steps: &mut Vec<Step>) {
    let inv = &loaded.inventory;
    let certs = requests(loaded);
    if certs.is_empty() && inv.pki.ca.is_none() {
        return;
    }
    let spec = PkiSpec {
        ca: inv.pki.ca.as_ref().map(|c| UserCaSpec {
            cert: std::path::absolute(loaded.resolve(&c.cert)).unwrap_or_else(|_| loaded.resolve(&c.cert)),
            key: c.key.clone(),
        }),
        ca_name: format!("Nautes CA ({})", inv.metadata.name),
        validity_secs: inv.pki.validity().as_secs(),
        ca_validity_secs: inv.pki.ca_validity().as_secs(),
        renew_before_secs: inv.pki.renew_before().as_secs(),
        certs,
    };
    let what = spec.certs.keys().cloned().collect::<Vec<_>>().join(", ");
    steps.push(Step::of(STEP_ID, format!("CA and certificates ({what})"), &spec));
}

/// One certificate on disk, as recorded in the step's outputs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recorded {
    pub cert: PathBuf,
    /// None for a user CA: its key stays where the user keeps it.
    pub key: Option<PathBuf>,
    pub sha256: String,
    /// Unknown (None) for a user CA, which the user renews.
    pub not_after: Option<u64>,
    #[serde(default)]
    pub request: Option<LeafRequest>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PkiOutputs {
    ca: Option<Recorded>,
    #[serde(default)]
    certs: BTreeMap<String, Recorded>,
}

fn io_error(path: &Path, e: std::io::Error) -> StepError {
    StepError::new(format!("{}: {e}", path.display()))
}

/// Still usable as recorded: the file is the one we wrote and is not near expiry.
fn still_good(r: &Recorded, renew_before: u64) -> bool {
    sha256_file(&r.cert).is_ok_and(|sha| sha == r.sha256)
        && r.key.as_ref().is_none_or(|k| k.is_file())
        && r.not_after.is_none_or(|t| t > unix_now() + renew_before)
}

/// Write a certificate (public) and its key (0600); what to record.
fn write_issued(dir: &Path, name: &str, issued: &Issued, request: Option<LeafRequest>) -> Result<Recorded, StepError> {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    write_private(&key, &issued.key_pem).map_err(|e| io_error(&key, e))?;
    write_atomic(&cert, issued.cert_pem.as_bytes(), 0o644).map_err(|e| io_error(&cert, e))?;
    Ok(Recorded {
        sha256: sha256_file(&cert).map_err(|e| io_error(&cert, e))?,
        cert,
        key: Some(key),
        not_after: Some(issued.not_after),
        request,
    })
}

/// The CA to sign with, and whether it differs from the last run's.
fn ca_for_run(
    ctx: &StepContext,
    spec: &PkiSpec,
    dir: &Path,
    prev: &Option<Recorded>,
) -> Result<(Ca, Recorded, bool), StepError> {
    let renew = spec.renew_before_secs;
    if let Some(user) = &spec.ca {
        let cert_pem = std::fs::read_to_string(&user.cert).map_err(|e| io_error(&user.cert, e))?;
        let key = user
            .key
            .resolve(&ctx.base_dir)
            .map_err(|e| StepError::new(format!("pki.ca.key: {e}")))?;
        let ca =
            Ca::load(&cert_pem, &key).map_err(|e| StepError::new(format!("pki.ca ({}): {e}", user.cert.display())))?;
        // A CA we generated before is replaced: its key must not linger.
        if let Some(ours) = prev.as_ref().filter(|p| p.key.is_some()) {
            remove_files(ours)?;
        }
        // A copy beside the issued certificates: clients are pointed at one directory.
        let copy = dir.join("ca.crt");
        write_atomic(&copy, cert_pem.as_bytes(), 0o644).map_err(|e| io_error(&copy, e))?;
        let sha = sha256_file(&copy).map_err(|e| io_error(&copy, e))?;
        let changed = prev.as_ref().is_none_or(|p| p.sha256 != sha || p.key.is_some());
        let recorded = Recorded {
            cert: copy,
            key: None,
            sha256: sha,
            not_after: None,
            request: None,
        };
        return Ok((ca, recorded, changed));
    }
    if let Some(p) = prev.as_ref().filter(|p| p.key.is_some() && still_good(p, renew)) {
        let key_path = p.key.clone().unwrap_or_default();
        let cert_pem = std::fs::read_to_string(&p.cert).map_err(|e| io_error(&p.cert, e))?;
        let key = std::fs::read_to_string(&key_path).map_err(|e| io_error(&key_path, e))?;
        let ca = Ca::load(&cert_pem, &crate::secret::Secret::new(key))
            .map_err(|e| StepError::new(format!("{}: {e}", p.cert.display())))?;
        return Ok((ca, p.clone(), false));
    }
    ctx.progress("generating the CA");
    let (ca, issued) =
        Ca::generate(&spec.ca_name, Duration::from_secs(spec.ca_validity_secs)).map_err(StepError::new)?;
    let recorded = write_issued(dir, "ca", &issued, None)?;
    Ok((ca, recorded, true))
}

pub struct PkiHandler;

#[async_trait]
impl Handler for PkiHandler {
    type Spec = PkiSpec;

    async fn apply(&self, ctx: &StepContext, spec: &PkiSpec) -> Result<Value, StepError> {
        let dir = ctx.outputs_dir.join("pki");
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| io_error(&dir, e))?;
        }
        let prev: PkiOutputs = serde_json::from_value(ctx.previous_outputs.clone()).unwrap_or_default();
        let (ca, ca_record, ca_changed) = ca_for_run(ctx, spec, &dir, &prev.ca)?;
        let renew = spec.renew_before_secs;
        let mut certs = BTreeMap::new();
        let mut issued_now = Vec::new();
        for (name, request) in &spec.certs {
            let kept = prev
                .certs
                .get(name)
                .filter(|r| !ca_changed && r.request.as_ref() == Some(request) && still_good(r, renew));
            let record = match kept {
                Some(r) => r.clone(),
                None => {
                    ctx.progress(format!("issuing certificate {name}"));
                    let issued = ca
                        .issue(request, Duration::from_secs(spec.validity_secs))
                        .map_err(StepError::new)?;
                    issued_now.push(name.clone());
                    write_issued(&dir, name, &issued, Some(request.clone()))?
                }
            };
            certs.insert(name.clone(), record);
        }
        for (name, old) in &prev.certs {
            if !certs.contains_key(name) {
                remove_files(old)?;
            }
        }
        let refresh_after = certs
            .values()
            .chain(std::iter::once(&ca_record))
            .filter_map(|r| r.not_after)
            .map(|t| t.saturating_sub(renew))
            .min();
        let mut out = json!({ "ca": ca_record, "certs": certs, "issued": issued_now });
        if let Some(t) = refresh_after {
            out[REFRESH_AFTER] = json!(t);
        }
        Ok(out)
    }

    async fn destroy(&self, _ctx: &StepContext, _spec: &PkiSpec, outputs: &Value) -> Result<(), StepError> {
        let recorded: PkiOutputs = serde_json::from_value(outputs.clone()).unwrap_or_default();
        for r in recorded.certs.values().chain(recorded.ca.iter()) {
            remove_files(r)?;
        }
        Ok(())
    }
}

fn remove_files(r: &Recorded) -> Result<(), StepError> {
    for path in std::iter::once(&r.cert).chain(r.key.iter()) {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_error(path, e)),
            _ => {}
        }
    }
    Ok(())
}

/// The platform's CA and the certificates it issues.
pub struct Certificates;

impl super::Component for Certificates {
    fn plan(
        &self,
        loaded: &crate::inventory::Loaded,
        steps: &mut Vec<crate::plan::Step>,
    ) -> Result<(), Vec<crate::inventory::Diagnostic>> {
        plan(loaded, steps);
        Ok(())
    }

    fn handlers(&self, registry: &mut crate::engine::Registry) {
        registry.add(PkiHandler);
    }
}
