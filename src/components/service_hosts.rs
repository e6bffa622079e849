//! Vault and GitLab on hosts of their own (`placement: host`): our own
//! Ansible playbooks (playbooks/, embedded in the binary) run with the real
//! `ansible-playbook` against a one-host inventory. Vault gets the pinned
//! release zip, a `vault` system user, integrated raft storage and a TLS
//! listener with the certificate the `pki` step issued; GitLab gets the
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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::artifacts::{files_from_outputs, files_step, pinned_file, FileSpec};
use super::hosts::{self, HostConn};
use super::{infrastructure, pki, remote, versions};
use crate::drivers::ansible::{self, Playbook};
use crate::engine::state::write_atomic;
use crate::engine::{Rendered, StepContext, StepError, StepHandler};
use crate::inventory::spans::push_key;
use crate::inventory::{Component, Diagnostic, Loaded, Placement, SudoMode};
use crate::plan::Step;
use crate::secret::{random_token, write_private, Secret};

pub const KIND: &str = "service-host";
pub const VAULT_STEP_ID: &str = "vault/host";
pub const GITLAB_STEP_ID: &str = "gitlab/host";

/// Every file under playbooks/ the runs need, by path relative to it.
const PLAYBOOKS: &[(&str, &str)] = &[
    ("vault-host.yml", include_str!("../../playbooks/vault-host.yml")),
    ("gitlab-host.yml", include_str!("../../playbooks/gitlab-host.yml")),
    (
        "tasks/preflight.yml",
        include_str!("../../playbooks/tasks/preflight.yml"),
    ),
    (
        "tasks/remove-paths.yml",
        include_str!("../../playbooks/tasks/remove-paths.yml"),
    ),
    (
        "tasks/vault-present.yml",
        include_str!("../../playbooks/tasks/vault-present.yml"),
    ),
    (
        "tasks/vault-absent.yml",
        include_str!("../../playbooks/tasks/vault-absent.yml"),
    ),
    (
        "tasks/gitlab-present.yml",
        include_str!("../../playbooks/tasks/gitlab-present.yml"),
    ),
    (
        "tasks/gitlab-absent.yml",
        include_str!("../../playbooks/tasks/gitlab-absent.yml"),
    ),
    (
        "templates/vault.hcl.j2",
        include_str!("../../playbooks/templates/vault.hcl.j2"),
    ),
    (
        "templates/vault.service.j2",
        include_str!("../../playbooks/templates/vault.service.j2"),
    ),
    (
        "templates/gitlab.rb.j2",
        include_str!("../../playbooks/templates/gitlab.rb.j2"),
    ),
];

/// GitLab services Nautes does not need, off unless `values.<name>: true`.
const GITLAB_OPTIONAL: [&str; 5] = ["registry", "pages", "kas", "mattermost", "monitoring"];

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

    fn title(self) -> &'static str {
        match self {
            Service::Vault => "Vault",
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

    fn default_version(self) -> &'static str {
        match self {
            Service::Vault => versions::VAULT,
            Service::Gitlab => versions::GITLAB,
        }
    }

    /// The one file it is installed from: in the bundle at
    /// `<service>/<version>/<name>`, online from the pinned release (the
    /// Vault zip checked against HashiCorp's published SHA256SUMS; GitLab
    /// publishes no sums file for its packages).
    pub fn package(self, version: &str) -> FileSpec {
        match self {
            Service::Vault => {
                let name = format!("vault_{version}_linux_amd64.zip");
                let release = format!("https://releases.hashicorp.com/vault/{version}");
                FileSpec {
                    sums_url: Some(format!("{release}/vault_{version}_SHA256SUMS")),
                    sums_name: Some(name.clone()),
                    ..pinned_file(
                        &name,
                        format!("vault/{version}/{name}"),
                        format!("{release}/{name}"),
                        None,
                    )
                }
            }
            Service::Gitlab => {
                let name = format!("gitlab-ce_{version}_amd64.deb");
                pinned_file(
                    &name,
                    format!("gitlab/{version}/{name}"),
                    format!("https://packages.gitlab.com/gitlab/gitlab-ce/packages/ubuntu/jammy/{name}/download.deb"),
                    None,
                )
            }
        }
    }

    fn component(self, loaded: &Loaded) -> Option<&Component> {
        let c = &loaded.inventory.components;
        match self {
            Service::Vault => c.vault.as_ref(),
            Service::Gitlab => c.gitlab.as_ref(),
        }
    }
}

/// What a service-host step acts on; all of it is fingerprinted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceHostSpec {
    pub service: Service,
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

/// Plan `vault/host` and `gitlab/host` for the components placed on a host.
pub fn plan(loaded: &Loaded, steps: &mut Vec<Step>) -> Result<(), Vec<Diagnostic>> {
    let mut problems = Vec::new();
    for service in [Service::Vault, Service::Gitlab] {
        let Some(c) = service
            .component(loaded)
            .filter(|c| c.enabled && c.placement == Placement::Host)
        else {
            continue;
        };
        if let Err(mut p) = plan_one(loaded, service, c, steps) {
            problems.append(&mut p);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn plan_one(loaded: &Loaded, service: Service, c: &Component, steps: &mut Vec<Step>) -> Result<(), Vec<Diagnostic>> {
    let base = push_key("components", service.key());
    let title = service.title();
    let Some(host) = &c.host else {
        return Err(vec![Diagnostic::error(
            &base,
            format!("{title} is placed on a host (`placement: host`) but names none"),
        )
        .with_hint(format!(
            "add `host: <name>` naming the entry of `hosts` to install {title} on"
        ))
        .at(loaded.spans.value(&base))]);
    };
    let Some(conn) = hosts::connection(loaded, host) else {
        if infrastructure::provider_step(loaded, host).is_some() {
            // A Terraform module creates it: planned once that has run.
            return Ok(());
        }
        let path = push_key(&base, "host");
        return Err(vec![Diagnostic::error(&path, format!("unknown host `{host}`"))
            .with_hint(format!(
                "define `{host}` under `hosts` (or in a Terraform module's `provides`), or name a host that is defined"
            ))
            .at(loaded.spans.value(&path).or(loaded.spans.value(&base)))]);
    };
    let mut problems = Vec::new();
    let flag = |key: &str, problems: &mut Vec<Diagnostic>| -> bool {
        match c.values.get(key) {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                let path = push_key(&push_key(&base, "values"), key);
                problems.push(
                    Diagnostic::error(&path, format!("`{key}` must be true or false, not {other}"))
                        .at(loaded.spans.value(&path)),
                );
                false
            }
        }
    };
    let keep_data = flag("keepDataOnDestroy", &mut problems);
    let version = c
        .version
        .clone()
        .unwrap_or_else(|| service.default_version().to_string());
    let file = service.package(&version);
    let package = file.name.clone();
    let artifact = match files_step(
        loaded,
        service.key(),
        title,
        &version,
        vec![file],
        &push_key(&base, "version"),
    ) {
        Ok(a) => a,
        Err(d) => {
            problems.push(d);
            return Err(problems);
        }
    };
    let package_sha256 = artifact.spec["files"][0]["sha256"].as_str().map(str::to_string);
    let artifacts_id = artifact.id.clone();
    if !steps.iter().any(|s| s.id == artifacts_id) {
        steps.push(artifact);
    }
    let waive = hosts::find(loaded, host).map(|h| h.waive.clone()).unwrap_or_default();
    let mut vars = Map::new();
    vars.insert("waive".into(), json!(waive));
    let url = match service {
        Service::Vault => {
            let url = format!("https://{}:8200", url_host(&conn.address));
            vars.insert("vault_version".into(), json!(version));
            vars.insert("vault_node_id".into(), json!(conn.name));
            vars.insert("vault_url".into(), json!(url));
            vars.insert("vault_api_addr".into(), json!(url));
            vars.insert(
                "vault_cluster_addr".into(),
                json!(format!("https://{}:8201", url_host(&conn.internal_address))),
            );
            url
        }
        Service::Gitlab => {
            // Without a domain, the address: a host name would need DNS the
            // inventory does not promise (both are in the certificate).
            let external = match &loaded.inventory.settings.domain {
                Some(d) => format!("gitlab.{d}"),
                None => url_host(&conn.address),
            };
            let url = format!("https://{external}");
            let mut whitelist: Vec<String> = Vec::new();
            for a in [&conn.address, &conn.internal_address] {
                if let Ok(ip) = a.parse::<std::net::IpAddr>() {
                    let net = format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 });
                    if !whitelist.contains(&net) {
                        whitelist.push(net);
                    }
                }
            }
            let services: Map<String, Value> = GITLAB_OPTIONAL
                .iter()
                .map(|s| (s.to_string(), json!(flag(s, &mut problems))))
                .collect();
            let extra = match c.values.get("gitlabRb") {
                None => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => {
                    let path = push_key(&push_key(&base, "values"), "gitlabRb");
                    problems.push(
                        Diagnostic::error(
                            &path,
                            format!("`gitlabRb` must be text (Ruby lines for gitlab.rb), not {other}"),
                        )
                        .with_hint("write it as a YAML block: `gitlabRb: |`")
                        .at(loaded.spans.value(&path)),
                    );
                    String::new()
                }
            };
            vars.insert("gitlab_version".into(), json!(version));
            vars.insert("gitlab_external_url".into(), json!(url));
            vars.insert(
                "gitlab_check_url".into(),
                json!(format!("https://{}", url_host(&conn.address))),
            );
            vars.insert("gitlab_monitoring_whitelist".into(), json!(whitelist));
            vars.insert("gitlab_services".into(), Value::Object(services));
            vars.insert("gitlab_rb_extra".into(), json!(extra));
            url
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let spec = ServiceHostSpec {
        service,
        version: version.clone(),
        host: conn,
        artifacts: artifacts_id.clone(),
        package,
        package_sha256,
        url,
        keep_data_on_destroy: keep_data,
        vars,
    };
    steps.push(
        Step::new(
            service.step_id(),
            KIND,
            format!("{title} {version} on host {host}"),
            json!(spec),
        )
        .needs([pki::STEP_ID.to_string(), artifacts_id])
        .needs(infrastructure::provider_step(loaded, host)),
    );
    Ok(())
}

/// An address as the host part of a URL (IPv6 in brackets).
fn url_host(address: &str) -> String {
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => address.to_string(),
    }
}

/// The one-host Ansible inventory for `host`, verifying its key against
/// `known_hosts` exactly as our own SSH connections do.
pub fn render_inventory(host: &HostConn, known_hosts: &str) -> Result<String, String> {
    let q = remote::sh_quote;
    let mut ssh_args = Vec::new();
    if let Some(cfg) = &host.config_file {
        ssh_args.push(format!("-F {}", q(&cfg.display().to_string())));
    }
    ssh_args.push(format!("-o UserKnownHostsFile={}", q(known_hosts)));
    ssh_args.push("-o StrictHostKeyChecking=yes".to_string());
    let mut jumps = Vec::new();
    let mut b = host.bastion.as_deref();
    while let Some(j) = b {
        jumps.insert(0, format!("{}@{}:{}", j.user, url_host(&j.address), j.port));
        b = j.bastion.as_deref();
    }
    if !jumps.is_empty() {
        ssh_args.push(format!("-o ProxyJump={}", jumps.join(",")));
    }
    let mut vars = Map::new();
    vars.insert("ansible_host".into(), json!(host.address));
    vars.insert("ansible_port".into(), json!(host.port));
    vars.insert("ansible_user".into(), json!(host.user));
    if let Some(key) = &host.identity_file {
        vars.insert("ansible_ssh_private_key_file".into(), json!(key.display().to_string()));
    }
    if host.user != "root" {
        vars.insert("ansible_become".into(), json!(true));
    }
    vars.insert("ansible_ssh_common_args".into(), json!(ssh_args.join(" ")));
    // One SSH round trip per task instead of several.
    vars.insert("ansible_pipelining".into(), json!(true));
    vars.insert("ansible_python_interpreter".into(), json!("auto_silent"));
    let inventory = json!({ "all": { "hosts": { host.name.clone(): vars } } });
    let yaml = serde_yaml::to_string(&inventory).map_err(|e| e.to_string())?;
    Ok(format!(
        "# One-host inventory for {}, written by nautes-install.\n{yaml}",
        host.name
    ))
}

fn parse(spec: &Value) -> Result<ServiceHostSpec, StepError> {
    serde_json::from_value(spec.clone()).map_err(|e| StepError::new(format!("service-host step is malformed: {e}")))
}

fn io_error(path: &Path, e: std::io::Error) -> StepError {
    StepError::new(format!("cannot write {}: {e}", path.display()))
}

/// Write the embedded playbooks under the workdir; returns their directory.
fn write_playbooks(workdir: &Path) -> Result<PathBuf, StepError> {
    let dir = workdir.join("playbooks");
    for (rel, text) in PLAYBOOKS {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
        }
        write_atomic(&path, text.as_bytes(), 0o644).map_err(|e| io_error(&path, e))?;
    }
    Ok(dir)
}

/// Where GitLab's initial root password is kept (0600).
fn root_password_file(ctx: &StepContext) -> PathBuf {
    ctx.outputs_dir.join("gitlab").join("root-password")
}

/// The root password, generated on first use and kept for every later run.
fn root_password(path: &Path) -> Result<Secret, StepError> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(Secret::new(s.trim())),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StepError::new(format!(
            "cannot read GitLab's root password from {}: {e}",
            path.display()
        ))),
        _ => {
            let secret =
                random_token().map_err(|e| StepError::new(format!("cannot generate GitLab's root password: {e}")))?;
            write_private(path, &secret).map_err(|e| io_error(path, e))?;
            Ok(secret)
        }
    }
}

/// Removes the secrets file however the run ends.
struct SecretsFile(PathBuf);

impl Drop for SecretsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Run the service's playbook with `vars` (and `secrets`, through a 0600
/// file); returns how many tasks changed something.
async fn run_playbook(
    ctx: &StepContext,
    spec: &ServiceHostSpec,
    vars: Map<String, Value>,
    mut secrets: Map<String, Value>,
) -> Result<u64, StepError> {
    // Our SSH driver first: it reports an unreachable host clearly and
    // verifies (or, when allowed, records) the host key Ansible then checks.
    let remote = remote::connect(ctx, &spec.host).await?;
    remote::run_checked(&*remote, "true").await?;

    let playbooks = write_playbooks(&ctx.workdir)?;
    let dir = ctx.workdir.join("service-hosts").join(spec.service.key());
    std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
    let pool = ctx.services.get::<crate::drivers::ssh::SshPool>();
    let known_hosts = pool
        .as_ref()
        .map(|p| p.options().known_hosts.display().to_string())
        .unwrap_or_else(|| ctx.workdir.join("known_hosts").display().to_string());
    // Ansible's SSH masters live for this run only, beside ours (a short
    // path: sockets have a length limit). In a shared directory a master
    // left from an earlier run would be reused for a new host that has
    // the same address.
    let control_dir = pool
        .as_ref()
        .map(|p| p.options().control_dir.join("ansible"))
        .unwrap_or_else(|| std::env::temp_dir().join(format!("nautes-ansible-{}", std::process::id())));
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&control_dir)
            .map_err(|e| io_error(&control_dir, e))?;
    }
    let inventory = dir.join("inventory.yml");
    let text = render_inventory(&spec.host, &known_hosts).map_err(StepError::new)?;
    write_atomic(&inventory, text.as_bytes(), 0o600).map_err(|e| io_error(&inventory, e))?;
    let vars_file = dir.join("vars.json");
    let text = serde_json::to_vec_pretty(&vars).map_err(|e| StepError::new(e.to_string()))?;
    write_atomic(&vars_file, &text, 0o600).map_err(|e| io_error(&vars_file, e))?;
    let mut extra_args = vec!["-e".to_string(), format!("@{}", vars_file.display())];

    if spec.host.sudo == SudoMode::Password {
        let reference = spec.host.sudo_password.as_ref().ok_or_else(|| {
            StepError::new(format!(
                "{}: sudo mode `password` without `sudoPassword`",
                spec.host.name
            ))
        })?;
        let password = crate::secret::resolve(reference, &ctx.base_dir)
            .map_err(|e| StepError::new(format!("{}: sudo password: {e}", spec.host.name)))?;
        secrets.insert("ansible_become_password".into(), json!(password.expose()));
    }
    let _secrets_guard = if secrets.is_empty() {
        None
    } else {
        let path = dir.join("secrets.json");
        let text = Secret::new(serde_json::to_string(&secrets).map_err(|e| StepError::new(e.to_string()))?);
        write_private(&path, &text).map_err(|e| io_error(&path, e))?;
        extra_args.extend(["-e".to_string(), format!("@{}", path.display())]);
        Some(SecretsFile(path))
    };
    drop(secrets);

    let pb = Playbook {
        binary: ansible::locate().map_err(|e| StepError::new(e.to_string()))?,
        dir: playbooks,
        inventory,
        extra_args,
        env: BTreeMap::from([
            ("ANSIBLE_HOST_KEY_CHECKING".to_string(), "True".to_string()),
            ("ANSIBLE_PIPELINING".to_string(), "True".to_string()),
            (
                "ANSIBLE_SSH_CONTROL_PATH_DIR".to_string(),
                control_dir.display().to_string(),
            ),
        ]),
        timeout: ctx
            .timeouts
            .ansible
            .map(|d| d.get())
            .unwrap_or(Duration::from_secs(3600)),
    };
    let playbook = spec.service.playbook();
    let changed = AtomicU64::new(0);
    let recap = format!("{} ", spec.host.name);
    pb.run(playbook, &|line, p| {
        tracing::info!(target: "nautes_install::ansible", playbook, "{line}");
        if line.starts_with("TASK [") || line.starts_with("RUNNING HANDLER [") {
            ctx.progress(format!("{playbook}: task {}: {}", p.tasks, p.current));
        }
        if let Some(n) = line
            .strip_prefix(&recap)
            .filter(|rest| rest.trim_start().starts_with(": ok="))
            .and_then(|rest| rest.split("changed=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
        {
            changed.store(n, Ordering::Relaxed);
        }
    })
    .await
    .map_err(|e| StepError::new(e.to_string()))?;
    Ok(changed.load(Ordering::Relaxed))
}

fn run_vars(ctx: &StepContext, spec: &ServiceHostSpec, state: &str) -> Map<String, Value> {
    let mut vars = spec.vars.clone();
    vars.insert("state".into(), json!(state));
    vars.insert("keep_data".into(), json!(spec.keep_data_on_destroy));
    let ready = ctx
        .timeouts
        .rollout
        .map(|d| d.get())
        .unwrap_or(Duration::from_secs(600));
    vars.insert("ready_timeout".into(), json!(ready.as_secs().max(10)));
    vars
}

/// A path recorded in the pki step's outputs.
fn pki_path(ctx: &StepContext, pointer: &str, what: &str) -> Result<String, StepError> {
    ctx.needs_outputs
        .get(pki::STEP_ID)
        .and_then(|o| o.pointer(pointer))
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| StepError::new(format!("the pki step recorded no {what}; run it first")))
}

pub struct ServiceHostHandler;

#[async_trait]
impl StepHandler for ServiceHostHandler {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn apply(&self, ctx: &StepContext, spec: &Value) -> Result<Value, StepError> {
        let spec = parse(spec)?;
        let key = spec.service.key();
        if let Some(prev) = ctx.previous_outputs["host"].as_str().filter(|h| *h != spec.host.name) {
            return Err(StepError::new(format!(
                "{} is installed on host {prev}; the inventory now places it on {}. Moving it would not carry its data over: \
                 remove `components.{key}` and apply (that tears it down on {prev}; set `values.keepDataOnDestroy: true` to keep its data there), \
                 then place it on {}",
                spec.service.title(),
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
        let mut vars = run_vars(ctx, &spec, "present");
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
        let changed = run_playbook(ctx, &spec, vars, secrets).await?;
        outputs["changed"] = json!(changed);
        Ok(outputs)
    }

    async fn destroy(&self, ctx: &StepContext, spec: &Value, outputs: &Value) -> Result<(), StepError> {
        let spec = parse(spec)?;
        let vars = run_vars(ctx, &spec, "absent");
        ctx.progress(format!("removing {} from {}", spec.service.title(), spec.host.name));
        run_playbook(ctx, &spec, vars, Map::new()).await?;
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

    fn render(&self, spec: &Value) -> Result<Vec<Rendered>, StepError> {
        let spec = parse(spec)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_playbook_file_is_embedded_and_parses_as_yaml() {
        for (rel, text) in PLAYBOOKS {
            if rel.ends_with(".yml") {
                serde_yaml::from_str::<serde_yaml::Value>(text).unwrap_or_else(|e| panic!("{rel}: {e}"));
            }
        }
        // Every task file a playbook includes is embedded.
        for (_, text) in PLAYBOOKS {
            for line in text.lines().filter(|l| l.contains("include_tasks:")) {
                let target = line.split("include_tasks:").nth(1).unwrap().trim().trim_matches('"');
                let expanded: Vec<String> = ["present", "absent"]
                    .iter()
                    .map(|s| target.replace("{{ state }}", s))
                    .collect();
                for t in expanded {
                    let t = if t.starts_with("tasks/") {
                        t
                    } else {
                        format!("tasks/{t}")
                    };
                    assert!(PLAYBOOKS.iter().any(|(r, _)| *r == t), "{t} is not embedded");
                }
            }
        }
    }

    #[test]
    fn the_inventory_verifies_host_keys_and_becomes_root_only_when_needed() {
        let host = HostConn {
            name: "vault-1".into(),
            address: "fd00::5".into(),
            internal_address: "fd00::5".into(),
            port: 2222,
            user: "ubuntu".into(),
            identity_file: Some("/keys/id".into()),
            sudo: SudoMode::Passwordless,
            sudo_password: None,
            bastion: Some(Box::new(HostConn {
                name: "bastion".into(),
                address: "192.0.2.1".into(),
                internal_address: "192.0.2.1".into(),
                port: 22,
                user: "jump".into(),
                identity_file: None,
                sudo: SudoMode::None,
                sudo_password: None,
                bastion: None,
                config_file: None,
            })),
            config_file: None,
        };
        let text = render_inventory(&host, "/w/known hosts").unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let h = &v["all"]["hosts"]["vault-1"];
        assert_eq!(h["ansible_host"].as_str(), Some("fd00::5"));
        assert_eq!(h["ansible_port"].as_u64(), Some(2222));
        assert_eq!(h["ansible_become"].as_bool(), Some(true));
        let args = h["ansible_ssh_common_args"].as_str().unwrap();
        assert!(
            args.contains("-o UserKnownHostsFile='/w/known hosts' -o StrictHostKeyChecking=yes"),
            "{args}"
        );
        assert!(args.contains("-o ProxyJump=jump@192.0.2.1:22"), "{args}");
        assert_eq!(url_host("fd00::5"), "[fd00::5]");
    }

    fn planned(body: &str) -> Result<Vec<Step>, Vec<Diagnostic>> {
        let src = format!("apiVersion: install.nautes.io/v1alpha1\nkind: Inventory\nmetadata:\n  name: t\n{body}");
        let loaded = crate::inventory::load::load_str(Path::new("/nowhere/inventory.yaml"), &src)
            .unwrap_or_else(|r| panic!("{:?}", r.diagnostics));
        let mut steps = Vec::new();
        plan(&loaded, &mut steps).map(|()| steps)
    }

    const HOSTS: &str = "hosts:\n  - { name: vault-1, address: 10.0.0.5, internalAddress: 10.1.0.5 }\n  - { name: gitlab-1, address: 10.0.0.6 }\n";

    #[test]
    fn plans_one_step_per_service_with_its_package_certificate_and_urls() {
        let steps = planned(&format!(
            "settings: {{ domain: nautes.example.com }}\n{HOSTS}components:\n  vault: {{ placement: host, host: vault-1 }}\n  gitlab:\n    placement: host\n    host: gitlab-1\n    version: 16.3.0-ce.0\n    values: {{ registry: true, keepDataOnDestroy: true }}\n"
        ))
        .unwrap();
        let ids: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "artifacts/vault/1.10.4",
                VAULT_STEP_ID,
                "artifacts/gitlab/16.3.0-ce.0",
                GITLAB_STEP_ID
            ]
        );
        let vault: ServiceHostSpec = serde_json::from_value(steps[1].spec.clone()).unwrap();
        assert_eq!(steps[1].needs, [pki::STEP_ID, "artifacts/vault/1.10.4"]);
        assert_eq!(vault.url, "https://10.0.0.5:8200");
        assert_eq!(vault.package, "vault_1.10.4_linux_amd64.zip");
        assert_eq!(vault.vars["vault_cluster_addr"], "https://10.1.0.5:8201");
        assert_eq!(vault.vars["vault_node_id"], "vault-1");
        assert!(!vault.keep_data_on_destroy);
        let files = &steps[0].spec["files"][0];
        assert_eq!(
            files["url"],
            "https://releases.hashicorp.com/vault/1.10.4/vault_1.10.4_linux_amd64.zip"
        );
        assert_eq!(
            files["sums_url"],
            "https://releases.hashicorp.com/vault/1.10.4/vault_1.10.4_SHA256SUMS"
        );
        let gitlab: ServiceHostSpec = serde_json::from_value(steps[3].spec.clone()).unwrap();
        assert_eq!(gitlab.url, "https://gitlab.nautes.example.com");
        assert_eq!(gitlab.vars["gitlab_check_url"], "https://10.0.0.6");
        assert_eq!(gitlab.vars["gitlab_monitoring_whitelist"], json!(["10.0.0.6/32"]));
        assert_eq!(gitlab.vars["gitlab_services"]["registry"], true);
        assert_eq!(gitlab.vars["gitlab_services"]["kas"], false);
        assert!(gitlab.keep_data_on_destroy);
        assert_eq!(gitlab.package, "gitlab-ce_16.3.0-ce.0_amd64.deb");
    }

    #[test]
    fn a_missing_or_unknown_host_and_wrong_values_are_reported_with_their_path() {
        let errs = planned(&format!(
            "{HOSTS}components:\n  vault: {{ placement: host }}\n  gitlab: {{ placement: host, host: gitlab-9 }}\n"
        ))
        .unwrap_err();
        let got: Vec<(&str, bool)> = errs.iter().map(|d| (d.path.as_str(), d.hint.is_some())).collect();
        assert_eq!(got, [("components.vault", true), ("components.gitlab.host", true)]);
        assert!(
            errs[1].message.contains("unknown host `gitlab-9`"),
            "{}",
            errs[1].message
        );

        let errs = planned(&format!(
            "{HOSTS}components:\n  gitlab: {{ placement: host, host: gitlab-1, values: {{ registry: yes-please, gitlabRb: [1] }} }}\n"
        ))
        .unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            ["components.gitlab.values.registry", "components.gitlab.values.gitlabRb"]
        );
    }

    #[test]
    fn a_host_terraform_has_yet_to_create_is_planned_later_and_other_placements_not_here() {
        let steps = planned(
            "infrastructure:\n  modules:\n    - { name: cloud, source: ./tf, provides: [vault-9] }\ncomponents:\n  vault: { placement: host, host: vault-9 }\n  gitlab: { placement: external, external: { url: https://gitlab.example.com } }\n",
        )
        .unwrap();
        assert!(
            steps.is_empty(),
            "{:?}",
            steps.iter().map(|s| &s.id).collect::<Vec<_>>()
        );
    }

    #[test]
    fn an_airgap_bundle_without_the_package_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("checksums.sha256"), "").unwrap();
        let errs = planned(&format!(
            "artifacts: {{ mode: airgap, bundle: {} }}\n{HOSTS}components:\n  vault: {{ placement: host, host: vault-1 }}\n",
            dir.path().display()
        ))
        .unwrap_err();
        assert_eq!(errs[0].path, "components.vault.version");
        assert!(
            errs[0].message.contains("vault/1.10.4/vault_1.10.4_linux_amd64.zip"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn a_root_password_is_generated_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gitlab/root-password");
        let first = root_password(&path).unwrap();
        assert_eq!(first.expose().len(), 64);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(root_password(&path).unwrap(), first);
    }
}
