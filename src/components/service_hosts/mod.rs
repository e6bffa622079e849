//! Vault and GitLab on hosts of their own (`placement: host`): our own
//! Ansible playbooks (playbooks/, embedded in the binary) run with the real
//! `ansible-playbook` against a one-host inventory. Vault (or OpenBao, its
//! fork, with `distribution: openbao`: the same playbook with other names)
//! gets the pinned release archive, a system user of its own, integrated
//! raft storage and a TLS listener with the certificate the `pki` step
//! issued; GitLab gets the
//! pinned Omnibus .deb, a gitlab.rb with our certificate, a generated
//! initial root password and the services Nautes does not use turned off.
//! Each service is restarted (or reconfigured) only when what it reads
//! changed, and the step succeeds only once the service answers over TLS
//! that verifies against our CA. Teardown runs the same playbook with
//! `state=absent`.
//!
//! Secrets (the GitLab root password, a sudo password) reach Ansible only
//! through an extra-vars file written 0600 and removed after the run, never
//! on a command line; the tasks that use them are `no_log`.
//!
//! This module owns what the steps are: the two services, the step spec
//! and the handler that applies, destroys and renders it. The rest is one
//! concept a file:
//! - `plan`: the inventory's `placement: host` components into steps, and
//!   their validation;
//! - `packages`: the release each service is installed from (bundle path,
//!   download URL, published sums), and how Vault and OpenBao differ;
//! - `playbooks`: the playbooks embedded in the binary and writing them out;
//! - `inventory`: the one-host Ansible inventory;
//! - `run`: one `ansible-playbook` run, with its extra-vars and secrets files;
//! - `root_password`: GitLab's initial root password, kept in a 0600 file.

mod inventory;
mod packages;
mod plan;
mod playbooks;
mod root_password;
mod run;

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use self::root_password::{root_password, root_password_file};
use self::run::{run_playbook, run_vars};
use crate::catalog;
use crate::components::certificates;
use crate::engine::{Difference, Handler, Rendered, StepContext, StepError};
use crate::inventory::{Component, Loaded, VaultDistribution};
use crate::steps::host_files::{Expect, HostReads};
use crate::steps::hosts::HostConn;
use crate::steps::release_files::files_from_outputs;

pub use self::inventory::render_inventory;
pub use self::packages::VaultServer;
pub use self::plan::plan;

pub const KIND: &str = "service-host";
pub const VAULT_STEP_ID: &str = "vault/host";
pub const GITLAB_STEP_ID: &str = "gitlab/host";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Vault,
    Gitlab,
}

impl Service {
    /// The inventory key under `components`.
    pub fn key(self) -> &'static str {
        match self {
            Service::Vault => "vault",
            Service::Gitlab => "gitlab",
        }
    }

    /// As people call it (Vault's server by the distribution chosen).
    fn title(self, distribution: VaultDistribution) -> &'static str {
        match self {
            Service::Vault => VaultServer::of(distribution).title,
            Service::Gitlab => "GitLab",
        }
    }

    pub fn step_id(self) -> &'static str {
        match self {
            Service::Vault => VAULT_STEP_ID,
            Service::Gitlab => GITLAB_STEP_ID,
        }
    }

    fn playbook(self) -> &'static str {
        match self {
            Service::Vault => "vault-host.yml",
            Service::Gitlab => "gitlab-host.yml",
        }
    }

    /// The certificate the `pki` step issues for it.
    fn certificate(self) -> String {
        format!("{}-server", self.key())
    }

    fn component(self, loaded: &Loaded) -> Option<&Component> {
        let c = &loaded.inventory.components;
        match self {
            Service::Vault => c.get(catalog::VAULT.key),
            Service::Gitlab => c.get(catalog::GITLAB.key),
        }
    }
}

/// What a service-host step acts on; all of it is fingerprinted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceHostSpec {
    pub service: Service,
    /// Vault's server, HashiCorp's or OpenBao (none for GitLab).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<VaultDistribution>,
    pub version: String,
    pub host: HostConn,
    /// The artifacts step that provides `package`.
    pub artifacts: String,
    pub package: String,
    /// sha256 of the package when known at plan time (air-gap bundle), so a
    /// rebuilt bundle re-runs the install.
    pub package_sha256: Option<String>,
    /// Where clients reach the service.
    pub url: String,
    /// Teardown keeps the service's data (`values.keepDataOnDestroy`).
    pub keep_data_on_destroy: bool,
    /// Playbook variables that come from the inventory (no secrets, no
    /// paths of one run).
    pub vars: Map<String, Value>,
}

impl crate::plan::StepSpec for ServiceHostSpec {
    const KIND: &'static str = KIND;
}

impl ServiceHostSpec {
    /// What is installed, as people call it.
    fn title(&self) -> &'static str {
        self.service.title(self.distribution.unwrap_or_default())
    }
}

/// An address as the host part of a URL (IPv6 in brackets).
fn url_host(address: &str) -> String {
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => address.to_string(),
    }
}

fn io_error(path: &Path, e: std::io::Error) -> StepError {
    StepError::new(format!("cannot write {}: {e}", path.display()))
}

/// A path recorded in the pki step's outputs.
fn pki_path(ctx: &StepContext, pointer: &str, what: &str) -> Result<String, StepError> {
    ctx.needs_outputs
        .get(certificates::STEP_ID)
        .and_then(|o| o.pointer(pointer))
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| StepError::new(format!("the pki step recorded no {what}; run it first")))
}

pub struct ServiceHostHandler;

#[async_trait]
impl Handler for ServiceHostHandler {
    type Spec = ServiceHostSpec;

    async fn apply(&self, ctx: &StepContext, spec: &ServiceHostSpec) -> Result<Value, StepError> {
        let key = spec.service.key();
        if let Some(prev) = ctx.previous_outputs["host"].as_str().filter(|h| *h != spec.host.name) {
            return Err(StepError::new(format!(
                "{} is installed on host {prev}; the inventory now places it on {}. Moving it would not carry its data over: \
                 remove `components.{key}` and apply (that tears it down on {prev}; set `values.keepDataOnDestroy: true` to keep its data there), \
                 then place it on {}",
                spec.title(),
                spec.host.name,
                spec.host.name
            )));
        }
        let cert_name = spec.service.certificate();
        let cert = pki_path(
            ctx,
            &format!("/certs/{cert_name}/cert"),
            &format!("{cert_name} certificate"),
        )?;
        let key_file = pki_path(ctx, &format!("/certs/{cert_name}/key"), &format!("{cert_name} key"))?;
        let ca = pki_path(ctx, "/ca/cert", "CA certificate")?;
        let files = files_from_outputs(ctx.needs_outputs.get(&spec.artifacts).unwrap_or(&Value::Null))?;
        let package = files
            .get(&spec.package)
            .ok_or_else(|| StepError::new(format!("step {} provided no `{}`", spec.artifacts, spec.package)))?;
        let mut vars = run_vars(ctx, spec, "present");
        vars.insert(format!("{key}_package"), json!(package.path));
        vars.insert(format!("{key}_tls_cert"), json!(cert));
        vars.insert(format!("{key}_tls_key"), json!(key_file));
        vars.insert(format!("{key}_ca"), json!(ca));
        let mut outputs = json!({ "url": spec.url, "host": spec.host.name, "version": spec.version });
        let mut secrets = Map::new();
        if spec.service == Service::Gitlab {
            let path = root_password_file(ctx);
            let password = root_password(&path)?;
            secrets.insert("gitlab_root_password".into(), json!(password.expose()));
            outputs["rootPasswordFile"] = json!(path);
        }
        ctx.progress(format!("running {} on {}", spec.service.playbook(), spec.host.name));
        let changed = run_playbook(ctx, spec, vars, secrets).await?;
        outputs["changed"] = json!(changed);
        // What the playbook left, so drift can tell an edit made since.
        outputs["files"] = json!(recorded_files(ctx, spec).await?);
        Ok(outputs)
    }

    fn declare_drift(&self, ctx: &StepContext, spec: &ServiceHostSpec) {
        let (paths, command) = managed(spec);
        HostReads::of(ctx).declare(&spec.host.name, paths.iter().map(String::as_str), [command.as_str()]);
    }

    /// The files the playbook wrote, as it left them (recorded by apply;
    /// an older state without the record checks they are there), and the
    /// installed version.
    async fn drift(&self, ctx: &StepContext, spec: &ServiceHostSpec) -> Result<Option<Vec<Difference>>, StepError> {
        let (paths, command) = managed(spec);
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let live = HostReads::of(ctx)
            .read(ctx, &spec.host, &refs, &[command.as_str()])
            .await?;
        let recorded = &ctx.previous_outputs["files"];
        let want: Vec<Expect> = paths
            .iter()
            .map(|p| match recorded[p].as_str() {
                Some(sha) => Expect::sha256(p, sha),
                None => Expect::present(p),
            })
            .collect();
        let mut found = live.compare(&spec.host.name, &want);
        found.extend(live.version_difference(
            &command,
            &spec.version,
            format!("{} on {}", spec.title(), spec.host.name),
        ));
        Ok(Some(found))
    }

    async fn destroy(&self, ctx: &StepContext, spec: &ServiceHostSpec, outputs: &Value) -> Result<(), StepError> {
        let vars = run_vars(ctx, spec, "absent");
        ctx.progress(format!("removing {} from {}", spec.title(), spec.host.name));
        run_playbook(ctx, spec, vars, Map::new()).await?;
        // With the data kept, the root password still opens it.
        if spec.service == Service::Gitlab && !spec.keep_data_on_destroy {
            let path = outputs["rootPasswordFile"]
                .as_str()
                .map(PathBuf::from)
                .unwrap_or_else(|| root_password_file(ctx));
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StepError::new(format!("cannot remove {}: {e}", path.display())))
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn render(&self, spec: &ServiceHostSpec) -> Result<Vec<Rendered>, StepError> {
        let dir = format!("service-hosts/{}", spec.service.key());
        let inventory = render_inventory(&spec.host, "<workdir>/known_hosts").map_err(StepError::new)?;
        let vars = serde_json::to_string_pretty(&spec.vars).map_err(|e| StepError::new(e.to_string()))?;
        Ok(vec![
            Rendered {
                path: format!("{dir}/inventory.yml"),
                contents: inventory,
            },
            Rendered {
                path: format!("{dir}/vars.json"),
                contents: vars,
            },
        ])
    }
}

/// The files a service's playbook writes on its host (configuration,
/// unit, TLS material; not the data) and the command that says which
/// version is installed.
fn managed(spec: &ServiceHostSpec) -> (Vec<String>, String) {
    match spec.service {
        Service::Vault => {
            let server = spec
                .vars
                .get("vault_server")
                .cloned()
                .unwrap_or_else(|| VaultServer::VAULT.vars());
            let field = |k: &str| server[k].as_str().unwrap_or_default().to_string();
            let (name, dir, binary) = (field("name"), field("config_dir"), field("binary"));
            (
                vec![
                    format!("{dir}/{name}.hcl"),
                    format!("/etc/systemd/system/{name}.service"),
                    format!("{dir}/tls/{name}.crt"),
                    format!("{dir}/tls/{name}.key"),
                    format!("{dir}/tls/ca.crt"),
                ],
                format!("/usr/local/bin/{binary} version"),
            )
        }
        Service::Gitlab => (
            vec![
                "/etc/gitlab/gitlab.rb".into(),
                "/etc/gitlab/ssl/gitlab.crt".into(),
                "/etc/gitlab/ssl/gitlab.key".into(),
                "/etc/gitlab/trusted-certs/nautes-ca.crt".into(),
            ],
            "dpkg-query -W -f='${Version}' gitlab-ce".into(),
        ),
    }
}

/// sha256 of each managed file as the host holds it now (absent ones left out).
async fn recorded_files(ctx: &StepContext, spec: &ServiceHostSpec) -> Result<Map<String, Value>, StepError> {
    let (paths, _) = managed(spec);
    let remote = crate::steps::remote::connect(ctx, &spec.host).await?;
    let script: String = paths
        .iter()
        .map(|p| {
            let q = crate::steps::remote::sh_quote(p);
            format!("if [ -f {q} ]; then sha256sum < {q} | cut -d' ' -f1; else echo -; fi\n")
        })
        .collect();
    let out = crate::steps::remote::run_checked(&*remote, &script).await?;
    Ok(paths
        .iter()
        .zip(out.stdout.lines())
        .filter(|(_, sum)| *sum != "-")
        .map(|(p, sum)| (p.clone(), json!(sum.trim())))
        .collect())
}

/// GitLab and Vault on hosts of their own.
pub struct ServiceHosts;

impl super::Component for ServiceHosts {
    fn plan(
        &self,
        loaded: &crate::inventory::Loaded,
        steps: &mut Vec<crate::plan::Step>,
    ) -> Result<(), Vec<crate::inventory::Diagnostic>> {
        plan(loaded, steps)
    }

    fn handlers(&self, registry: &mut crate::engine::Registry) {
        registry.add(ServiceHostHandler);
    }
}
