//! Cloud hosts from Terraform modules. Each module is one step: prepare its
//! working directory under the workdir, write the variables (secrets resolved
//! only there, 0600), init, plan to a file, apply exactly that plan, and read
//! `nautes_hosts`. Those hosts then join the inventory, so SSH steps can
//! plan against them. Teardown destroys them after their clusters are gone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::drivers::terraform::{self, PlanSummary, Terraform};
use crate::engine::{Handler, StepContext, StepError};
use crate::inventory::{Host, Loaded, SecretRef};
use crate::plan::{Step, StepSpec};
use crate::state::State;
use crate::util::hex;

pub const KIND: &str = "terraform";
const TFVARS: &str = "nautes.auto.tfvars.json";
const PLAN_FILE: &str = "nautes.tfplan";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModuleSpec {
    pub name: String,
    /// Hash of the module's files: editing the module re-runs it.
    pub source_digest: String,
    pub variables: serde_json::Map<String, Value>,
    pub secret_variables: BTreeMap<String, SecretRef>,
    pub provides: Vec<String>,
    pub binary: Option<String>,
    pub cli_config: Option<PathBuf>,
}

impl StepSpec for ModuleSpec {
    const KIND: &'static str = KIND;
}

pub fn step_id(module: &str) -> String {
    format!("terraform/{module}")
}

/// The Terraform step that creates host `host`, if a module provides it.
pub fn provider_step(loaded: &Loaded, host: &str) -> Option<String> {
    loaded
        .inventory
        .infrastructure
        .modules
        .iter()
        .find(|m| m.provides.iter().any(|p| p == host))
        .map(|m| step_id(&m.name))
}

pub fn plan(loaded: &Loaded, steps: &mut Vec<Step>) {
    let tf = &loaded.inventory.infrastructure.terraform;
    for m in &loaded.inventory.infrastructure.modules {
        let source = std::path::absolute(loaded.resolve(&m.source)).unwrap_or_else(|_| loaded.resolve(&m.source));
        let spec = ModuleSpec {
            name: m.name.clone(),
            source_digest: digest_dir(&source).unwrap_or_default(),
            variables: m.variables.clone(),
            secret_variables: m.secret_variables.clone(),
            provides: m.provides.clone(),
            binary: tf.binary.clone(),
            cli_config: tf
                .cli_config
                .as_ref()
                .map(|c| std::path::absolute(loaded.resolve(c)).unwrap_or_else(|_| loaded.resolve(c))),
        };
        steps.push(
            Step::of(step_id(&m.name), format!("Terraform module {}", m.name), &spec)
                .with_settings(json!(TerraformSettings { source: Some(source) })),
        );
    }
}

/// Hosts that Terraform already created (recorded in the state) join the
/// inventory, as if the user had written them under `hosts`.
pub fn merge_hosts(loaded: &mut Loaded, state: &State) {
    let modules = loaded.inventory.infrastructure.modules.clone();
    for module in modules {
        let d = &module.host_defaults;
        let Some(rec) = state.steps.get(&step_id(&module.name)) else {
            continue;
        };
        let Ok(hosts) = serde_json::from_value::<Vec<TerraformHost>>(rec.outputs["hosts"].clone()) else {
            continue;
        };
        for h in hosts {
            if loaded.inventory.hosts.iter().any(|x| x.name == h.name) {
                continue;
            }
            loaded.inventory.hosts.push(Host {
                name: h.name,
                address: h.address,
                port: h.port,
                user: h.user.or_else(|| d.user.clone()),
                identity_file: d.identity_file.clone(),
                sudo: d.sudo,
                sudo_password: d.sudo_password.clone(),
                bastion: d.bastion.clone(),
                internal_address: None,
                labels: h.labels,
                roles: h.roles,
                os: None,
                waive: d.waive.clone(),
            });
        }
    }
}

fn digest_dir(dir: &Path) -> std::io::Result<String> {
    let mut files = Vec::new();
    collect(dir, dir, &mut files)?;
    files.sort();
    let mut h = Sha256::new();
    for rel in files {
        h.update(rel.as_bytes());
        h.update([0]);
        h.update(std::fs::read(dir.join(&rel))?);
        h.update([0]);
    }
    Ok(hex(&h.finalize()))
}

/// Module files: everything but Terraform's own working data.
fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == ".terraform" || name.starts_with("terraform.tfstate") || name == ".terraform.lock.hcl" {
            continue;
        }
        let p = e.path();
        if e.file_type()?.is_dir() {
            collect(root, &p, out)?;
        } else {
            out.push(p.strip_prefix(root).unwrap_or(&p).to_string_lossy().into_owned());
        }
    }
    Ok(())
}

pub struct TerraformHandler;

/// Where the module's files are: a setting, since moving the inventory's
/// directory is not a change to the module (its digest is in the spec).
#[derive(Debug, Default, Serialize, Deserialize)]
struct TerraformSettings {
    source: Option<PathBuf>,
}

impl TerraformSettings {
    fn source(self) -> Result<PathBuf, StepError> {
        self.source
            .ok_or_else(|| StepError::new("terraform step lacks its source (settings.source)"))
    }
}

/// The module's working directory, refreshed from its source, with the
/// variables written (secrets resolved here and only here, file 0600).
fn prepare(ctx: &StepContext, spec: &ModuleSpec) -> Result<Terraform, StepError> {
    let source = ctx.settings::<TerraformSettings>()?.source()?;
    let timeout = ctx.limits.terraform;
    prepare_in(&ctx.workdir, &ctx.base_dir, &source, spec, timeout)
}

/// The module's working directory under `workdir`, refreshed from `source`,
/// with the variables written.
pub fn prepare_in(
    workdir: &Path,
    base_dir: &Path,
    source: &Path,
    spec: &ModuleSpec,
    timeout: Duration,
) -> Result<Terraform, StepError> {
    let dir = workdir.join("terraform").join(&spec.name);
    let err = |what: &str, e: std::io::Error| StepError::new(format!("module {}: {what}: {e}", spec.name));
    let mut files = Vec::new();
    collect(source, source, &mut files).map_err(|e| err(&format!("cannot read {}", source.display()), e))?;
    for rel in files {
        let to = dir.join(&rel);
        if let Some(p) = to.parent() {
            std::fs::create_dir_all(p).map_err(|e| err("cannot create the working directory", e))?;
        }
        std::fs::copy(source.join(&rel), &to).map_err(|e| err(&format!("cannot copy {rel}"), e))?;
    }
    let mut vars = spec.variables.clone();
    for (name, r) in &spec.secret_variables {
        let secret = r
            .resolve(base_dir)
            .map_err(|e| StepError::new(format!("module {} variable `{name}`: {e}", spec.name)))?;
        vars.insert(name.clone(), Value::String(secret.expose().to_string()));
    }
    let text = serde_json::to_string_pretty(&Value::Object(vars)).map_err(|e| StepError::new(e.to_string()))?;
    crate::util::write_atomic(&dir.join(TFVARS), text.as_bytes(), 0o600)
        .map_err(|e| err("cannot write the variables", e))?;
    let binary = terraform::locate(spec.binary.as_deref()).map_err(|e| StepError::new(e.to_string()))?;
    let mut env = BTreeMap::new();
    if let Some(c) = &spec.cli_config {
        env.insert("TF_CLI_CONFIG_FILE".to_string(), c.display().to_string());
    }
    Ok(Terraform {
        binary,
        dir,
        env,
        timeout,
    })
}

/// What Terraform would do for this module now (init + plan, nothing applied):
/// what `nautes-install plan` shows beside the step.
pub async fn preview(workdir: &Path, base_dir: &Path, step: &Step) -> Result<PlanSummary, StepError> {
    let spec: ModuleSpec = crate::engine::decode(&step.spec)?;
    let settings: TerraformSettings = serde_json::from_value(step.settings.clone())
        .map_err(|e| StepError::new(format!("the settings of step {} are malformed: {e}", step.id)))?;
    let source = settings.source()?;
    let tf = prepare_in(workdir, base_dir, &source, &spec, Duration::from_secs(1800))?;
    let quiet = |_: &str| {};
    let fail = |e: terraform::TerraformError| StepError::new(format!("module {}: {e}", spec.name));
    tf.init(&quiet).await.map_err(fail)?;
    let summary = tf.plan(PLAN_FILE, false, &quiet).await.map_err(fail)?;
    let _ = std::fs::remove_file(tf.dir.join(PLAN_FILE));
    Ok(summary)
}

fn logger<'a>(ctx: &'a StepContext, module: &'a str) -> impl Fn(&str) + Sync + 'a {
    move |line: &str| {
        tracing::info!(target: "nautes_install::terraform", module = %module, "{line}");
        if line.contains(": Creat")
            || line.contains(": Destr")
            || line.contains(": Modif")
            || line.starts_with("Plan:")
            || line.starts_with("Apply complete")
        {
            ctx.progress(line.to_string());
        }
    }
}

async fn plan_and_apply(
    ctx: &StepContext,
    spec: &ModuleSpec,
    tf: &Terraform,
    destroy: bool,
) -> Result<PlanSummary, StepError> {
    let log = logger(ctx, &spec.name);
    let fail = |e: terraform::TerraformError| StepError::new(format!("module {}: {e}", spec.name));
    tf.init(&log).await.map_err(fail)?;
    let summary = tf.plan(PLAN_FILE, destroy, &log).await.map_err(fail)?;
    ctx.progress(format!(
        "plan: {} to add, {} to change, {} to destroy",
        summary.add, summary.change, summary.destroy
    ));
    if !summary.is_noop() {
        tf.apply(PLAN_FILE, &log).await.map_err(fail)?;
    }
    let _ = std::fs::remove_file(tf.dir.join(PLAN_FILE));
    Ok(summary)
}

#[async_trait]
impl Handler for TerraformHandler {
    type Spec = ModuleSpec;

    async fn apply(&self, ctx: &StepContext, spec: &ModuleSpec) -> Result<Value, StepError> {
        let tf = prepare(ctx, spec)?;
        let summary = plan_and_apply(ctx, spec, &tf, false).await?;
        let outputs = tf
            .outputs()
            .await
            .map_err(|e| StepError::new(format!("module {}: {e}", spec.name)))?;
        let hosts = parse_hosts_output(&outputs).map_err(|e| StepError::new(format!("module {}: {e}", spec.name)))?;
        let missing: Vec<&String> = spec
            .provides
            .iter()
            .filter(|p| !hosts.iter().any(|h| &h.name == *p))
            .collect();
        if !missing.is_empty() {
            let got: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
            return Err(StepError::new(format!(
                "module {} did not output hosts listed in `provides`: {} (it output: {})",
                spec.name,
                missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                got.join(", ")
            )));
        }
        // Only the host list is kept: other outputs may be sensitive.
        Ok(json!({ "hosts": hosts, "plan": summary }))
    }

    async fn destroy(&self, ctx: &StepContext, spec: &ModuleSpec, _outputs: &Value) -> Result<(), StepError> {
        let tf = prepare(ctx, spec)?;
        plan_and_apply(ctx, spec, &tf, true).await?;
        Ok(())
    }

    /// The variables file, with secret variables shown as where they come from.
    fn render(&self, spec: &ModuleSpec) -> Result<Vec<crate::engine::Rendered>, StepError> {
        let mut vars = spec.variables.clone();
        for (name, r) in &spec.secret_variables {
            let from = match (&r.env, &r.file) {
                (Some(e), _) => format!("<secret from env {e}>"),
                (_, Some(f)) => format!("<secret from file {}>", f.display()),
                _ => "<secret>".to_string(),
            };
            vars.insert(name.clone(), Value::String(from));
        }
        let text = serde_json::to_string_pretty(&Value::Object(vars)).map_err(|e| StepError::new(e.to_string()))?;
        Ok(vec![crate::engine::Rendered {
            path: format!("terraform/{}/{TFVARS}", spec.name),
            contents: text,
        }])
    }
}

/// A host as a host-creating module reports it in its `nautes_hosts` output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TerraformHost {
    pub name: String,
    pub address: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Read the `nautes_hosts` output; errors say which entry is wrong and why.
pub fn parse_hosts_output(outputs: &BTreeMap<String, Value>) -> Result<Vec<TerraformHost>, String> {
    let list = outputs
        .get("nautes_hosts")
        .ok_or("the module has no `nautes_hosts` output (see terraform/README.md for the contract)")?
        .as_array()
        .ok_or("`nautes_hosts` is not a list")?;
    list.iter()
        .enumerate()
        .map(|(i, v)| serde_json::from_value(v.clone()).map_err(|e| format!("nautes_hosts[{i}]: {e}")))
        .collect()
}

/// Hosts made by Terraform modules.
pub struct Infrastructure;

impl super::Component for Infrastructure {
    fn plan(
        &self,
        loaded: &crate::inventory::Loaded,
        steps: &mut Vec<crate::plan::Step>,
    ) -> Result<(), Vec<crate::inventory::Diagnostic>> {
        plan(loaded, steps);
        Ok(())
    }

    fn handlers(&self, registry: &mut crate::engine::Registry) {
        registry.add(TerraformHandler);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_output_contract() {
        let ok: BTreeMap<String, Value> = [(
            "nautes_hosts".to_string(),
            serde_json::json!([{"name": "a", "address": "10.0.0.1", "port": 22, "user": "root", "labels": {"k": "v"}, "roles": []}]),
        )]
        .into();
        assert_eq!(parse_hosts_output(&ok).unwrap()[0].address, "10.0.0.1");
        let bad: BTreeMap<String, Value> = [("nautes_hosts".to_string(), serde_json::json!([{"name": "a"}]))].into();
        assert!(parse_hosts_output(&bad).unwrap_err().contains("nautes_hosts[0]"));
        assert!(parse_hosts_output(&BTreeMap::new())
            .unwrap_err()
            .contains("no `nautes_hosts`"));
    }
}
