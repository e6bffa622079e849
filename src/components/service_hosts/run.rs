//! One `ansible-playbook` run against a service's host: the host reached
//! first with our own SSH driver, then the playbooks, the inventory and the
//! extra-vars written under the workdir (0600), secrets in a file of their
//! own that is removed however the run ends, and the count of tasks that
//! changed something read from the play recap.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Map, Value};

use super::playbooks::write_playbooks;
use super::{io_error, render_inventory, Service, ServiceHostSpec, VaultServer};
use crate::drivers::ansible::{self, Playbook};
use crate::engine::{StepContext, StepError};
use crate::inventory::SudoMode;
use crate::secret::{write_private, Secret};
use crate::steps::remote;
use crate::util::write_atomic;

/// Removes the secrets file however the run ends.
struct SecretsFile(PathBuf);

impl Drop for SecretsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Run the service's playbook with `vars` (and `secrets`, through a 0600
/// file); returns how many tasks changed something.
pub(super) async fn run_playbook(
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
    let ssh = remote::AnsibleSsh::of(ctx)?;
    let known_hosts = &ssh.known_hosts;
    let inventory = dir.join("inventory.yml");
    let text = render_inventory(&spec.host, known_hosts).map_err(StepError::new)?;
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
        let password = reference
            .resolve(&ctx.base_dir)
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
            ssh.env(),
        ]),
        timeout: ctx.limits.ansible,
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

/// The playbook variables of one run: the spec's, and what the run is for.
pub(super) fn run_vars(ctx: &StepContext, spec: &ServiceHostSpec, state: &str) -> Map<String, Value> {
    let mut vars = spec.vars.clone();
    if spec.service == Service::Vault && !vars.contains_key("vault_server") {
        // Recorded before the server's names were variables (a teardown
        // from an older state): it installed Vault.
        vars.insert("vault_server".into(), VaultServer::VAULT.vars());
    }
    vars.insert("state".into(), json!(state));
    vars.insert("keep_data".into(), json!(spec.keep_data_on_destroy));
    let ready = ctx.limits.rollout;
    vars.insert("ready_timeout".into(), json!(ready.as_secs().max(10)));
    vars
}
