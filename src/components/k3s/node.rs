//! One K3s node: send it the binary, install script, images, token and
//! config (each skipped when the node already has it), (re)run the install
//! script only when something changed, and wait until the cluster reports
//! the node Ready at the planned version. Teardown drains and deletes the
//! node when it alone is removed, then runs K3s's uninstall script.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    NodeSpec, Role, REMOTE_BINARY, REMOTE_CONFIG_FILE, REMOTE_IMAGES_DIR, REMOTE_INSTALL_SCRIPT,
    REMOTE_REGISTRIES_FILE, REMOTE_TOKEN_FILE,
};
use crate::engine::{Difference, Handler, StepContext, StepError};
use crate::steps::host_files::{Expect, HostReads};
use crate::steps::hosts::HostConn;
use crate::steps::release_files::{files_from_outputs, K3S_BINARY, K3S_IMAGES, K3S_INSTALL};
use crate::steps::remote::{connect, run_checked, sh_quote, Remote};
use crate::wait::{Poll, Wait};

pub struct NodeHandler;

/// The hosts a node step talks to: the node itself, and the first server,
/// whose kubectl reports on the cluster.
#[derive(Default, Deserialize)]
struct NodeSettings {
    conn: Option<HostConn>,
    control: Option<HostConn>,
}

impl NodeSettings {
    /// (node, control) from the step's settings.
    fn of(ctx: &StepContext) -> Result<(HostConn, HostConn), StepError> {
        let s = ctx.settings::<NodeSettings>()?;
        let lack = |key: &str| StepError::new(format!("step settings lack `{key}`"));
        Ok((
            s.conn.ok_or_else(|| lack("conn"))?,
            s.control.ok_or_else(|| lack("control"))?,
        ))
    }
}

#[async_trait]
impl Handler for NodeHandler {
    type Spec = NodeSpec;

    async fn apply(&self, ctx: &StepContext, spec: &NodeSpec) -> Result<Value, StepError> {
        let (conn, control) = NodeSettings::of(ctx)?;
        let files = files_from_outputs(ctx.needs_outputs.get(&spec.artifacts).unwrap_or(&Value::Null))?;
        let file = |name: &str| {
            files
                .get(name)
                .ok_or_else(|| StepError::new(format!("the artifacts step provided no `{name}`")))
        };
        let token_path = ctx.outputs_dir.join(super::token_file_name(&spec.cluster));
        let token = std::fs::read(&token_path)
            .map_err(|e| StepError::new(format!("cannot read the join token {}: {e}", token_path.display())))?;

        let node = connect(ctx, &conn).await?;
        let before = node
            .run(&format!(
                "if [ -x {REMOTE_BINARY} ] && {{ [ -e /usr/local/bin/k3s-uninstall.sh ] || [ -e /usr/local/bin/k3s-agent-uninstall.sh ]; }}; then {REMOTE_BINARY} --version | head -1; fi"
            ))
            .await?;
        let installed = before.stdout.trim().to_string();
        let upgrading = !installed.is_empty() && !installed.contains(&spec.version);
        let mut drained = false;
        if upgrading && spec.drain_on_upgrade {
            ctx.progress(format!("draining {} before the upgrade", spec.node));
            let ctl = connect(ctx, &control).await?;
            run_checked(
                &*ctl,
                &format!(
                    "{REMOTE_BINARY} kubectl drain {} --ignore-daemonsets --delete-emptydir-data --timeout=300s",
                    sh_quote(&spec.node)
                ),
            )
            .await?;
            drained = true;
        }

        ctx.progress(format!("sending K3s {} to {}", spec.version, spec.node));
        let images_path = format!("{REMOTE_IMAGES_DIR}/{K3S_IMAGES}");
        // Exactly the files uploaded below, so no read-ahead state outlives its use.
        let mut ahead = vec![
            REMOTE_BINARY,
            REMOTE_INSTALL_SCRIPT,
            REMOTE_TOKEN_FILE,
            REMOTE_CONFIG_FILE,
        ];
        if files.contains_key(K3S_IMAGES) {
            ahead.push(&images_path);
        }
        if spec.registries.is_some() {
            ahead.push(REMOTE_REGISTRIES_FILE);
        }
        if let Some(ca) = &spec.oidc_ca_file {
            ahead.push(ca);
        }
        node.prefetch(&ahead).await?;
        let mut sent = 0u64;
        let mut changed = false;
        for (local, remote, mode) in [
            (file(K3S_BINARY)?.path.clone(), REMOTE_BINARY.to_string(), 0o755),
            (
                file(K3S_INSTALL)?.path.clone(),
                REMOTE_INSTALL_SCRIPT.to_string(),
                0o755,
            ),
        ] {
            let s = node.upload(&local, &remote, mode).await?;
            sent += s.bytes;
            changed |= s.changed();
        }
        if let Some(images) = files.get(K3S_IMAGES) {
            // The images only need to be present before K3s (re)starts; they do not change the node's config.
            let s = node.upload(&images.path, &images_path, 0o644).await?;
            sent += s.bytes;
        }
        for (content, remote) in [
            (token.as_slice(), REMOTE_TOKEN_FILE),
            (spec.config.as_bytes(), REMOTE_CONFIG_FILE),
        ] {
            let s = node.upload_bytes(content, remote, 0o600).await?;
            sent += s.bytes;
            changed |= s.changed();
        }
        if let Some(remote) = &spec.oidc_ca_file {
            let ca = crate::components::certificates::ca_pem_of(ctx)?;
            let s = node.upload_bytes(ca.as_bytes(), remote, 0o644).await?;
            sent += s.bytes;
            changed |= s.changed();
        }
        match &spec.registries {
            Some(r) => {
                let s = node.upload_bytes(r.as_bytes(), REMOTE_REGISTRIES_FILE, 0o600).await?;
                sent += s.bytes;
                changed |= s.changed();
            }
            None => {
                let out = run_checked(
                    &*node,
                    &format!(
                        "if [ -e {REMOTE_REGISTRIES_FILE} ]; then rm -f {REMOTE_REGISTRIES_FILE}; echo removed; fi"
                    ),
                )
                .await?;
                changed |= out.stdout.contains("removed");
            }
        }

        let started = changed || installed.is_empty();
        if started {
            ctx.progress(format!("installing K3s {} on {}", spec.role.as_str(), spec.node));
            // K3s's script restarts the service only when the binary, the
            // unit or its env file changed: a new config.yaml, token or
            // registries.yaml alone would be written and never take effect.
            run_checked(
                &*node,
                &format!(
                    "INSTALL_K3S_SKIP_DOWNLOAD=true INSTALL_K3S_FORCE_RESTART=true INSTALL_K3S_EXEC={} sh {REMOTE_INSTALL_SCRIPT}",
                    spec.role.as_str()
                ),
            )
            .await?;
        }
        let ctl = connect(ctx, &control).await?;
        let limit = ctx.limits.node_ready;
        wait_ready(ctx, &*ctl, &spec.node, &spec.version, limit).await?;
        if drained {
            run_checked(
                &*ctl,
                &format!("{REMOTE_BINARY} kubectl uncordon {}", sh_quote(&spec.node)),
            )
            .await?;
        }
        Ok(json!({ "node": spec.node, "version": spec.version, "restarted": started, "bytes_sent": sent }))
    }

    fn declare_drift(&self, ctx: &StepContext, spec: &NodeSpec) {
        if let Ok((conn, _)) = NodeSettings::of(ctx) {
            let (paths, commands) = managed(spec);
            HostReads::of(ctx).declare(&conn.name, paths.iter().map(String::as_str), commands);
        }
    }

    /// The files the node was sent and K3s's unit, read with every other
    /// step's files on the host in one round trip; the binary by its version.
    async fn drift(&self, ctx: &StepContext, spec: &NodeSpec) -> Result<Option<Vec<Difference>>, StepError> {
        let (conn, _) = NodeSettings::of(ctx)?;
        let (paths, commands) = managed(spec);
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        let live = HostReads::of(ctx).read(ctx, &conn, &paths, &commands).await?;
        let files = files_from_outputs(ctx.needs_outputs.get(&spec.artifacts).unwrap_or(&Value::Null))?;
        let token_path = ctx.outputs_dir.join(super::token_file_name(&spec.cluster));
        let token = std::fs::read(&token_path)
            .map_err(|e| StepError::new(format!("cannot read the join token {}: {e}", token_path.display())))?;
        let mut want = vec![
            Expect::content(REMOTE_CONFIG_FILE, spec.config.as_bytes()),
            Expect::content(REMOTE_TOKEN_FILE, &token),
            Expect::present(&unit(spec.role)),
            Expect::present(&format!("{}.env", unit(spec.role))),
        ];
        if let Some(script) = files.get(K3S_INSTALL) {
            want.push(Expect::sha256(REMOTE_INSTALL_SCRIPT, &script.sha256));
        }
        want.push(match &spec.registries {
            Some(r) => Expect::content(REMOTE_REGISTRIES_FILE, r.as_bytes()),
            None => Expect::absent(REMOTE_REGISTRIES_FILE),
        });
        if let Some(remote) = &spec.oidc_ca_file {
            let ca = crate::components::certificates::ca_pem_of(ctx)?;
            want.push(Expect::content(remote, ca.as_bytes()));
        }
        let mut found = live.compare(&conn.name, &want);
        found.extend(live.version_difference(
            VERSION_COMMAND,
            &spec.version,
            format!("K3s binary {REMOTE_BINARY} on {}", conn.name),
        ));
        Ok(Some(found))
    }

    async fn destroy(&self, ctx: &StepContext, spec: &NodeSpec, _outputs: &Value) -> Result<(), StepError> {
        let (conn, control) = NodeSettings::of(ctx)?;
        if !ctx.full_teardown && control.name != conn.name {
            // Only this node leaves: move its workloads away and remove it from the cluster.
            let ctl = connect(ctx, &control).await?;
            let n = sh_quote(&spec.node);
            run_checked(
                &*ctl,
                &format!("{REMOTE_BINARY} kubectl drain {n} --ignore-daemonsets --delete-emptydir-data --timeout=300s && {REMOTE_BINARY} kubectl delete node {n} --ignore-not-found"),
            )
            .await?;
        }
        let node = connect(ctx, &conn).await?;
        let uninstall = if spec.role == Role::Agent {
            "k3s-agent-uninstall.sh"
        } else {
            "k3s-uninstall.sh"
        };
        run_checked(
            &*node,
            &format!("if [ -x /usr/local/bin/{uninstall} ]; then /usr/local/bin/{uninstall}; fi; rm -f {REMOTE_INSTALL_SCRIPT} {REMOTE_TOKEN_FILE} {REMOTE_CONFIG_FILE}"),
        )
        .await?;
        Ok(())
    }
}

const VERSION_COMMAND: &str = "/usr/local/bin/k3s --version";

/// The unit K3s's install script writes for `role`.
fn unit(role: Role) -> String {
    match role {
        Role::Server => "/etc/systemd/system/k3s.service".into(),
        Role::Agent => "/etc/systemd/system/k3s-agent.service".into(),
    }
}

/// The files a node step manages (read by drift) and the version command.
fn managed(spec: &NodeSpec) -> (Vec<String>, [&'static str; 1]) {
    let mut paths = vec![
        REMOTE_CONFIG_FILE.to_string(),
        REMOTE_TOKEN_FILE.to_string(),
        REMOTE_REGISTRIES_FILE.to_string(),
        REMOTE_INSTALL_SCRIPT.to_string(),
        unit(spec.role),
        format!("{}.env", unit(spec.role)),
    ];
    paths.extend(spec.oidc_ca_file.clone());
    (paths, [VERSION_COMMAND])
}

/// Poll the cluster (kubectl on a server) until `node` is Ready at `version`.
async fn wait_ready(
    ctx: &StepContext,
    ctl: &dyn Remote,
    node: &str,
    version: &str,
    limit: Duration,
) -> Result<(), StepError> {
    let command = format!("{REMOTE_BINARY} kubectl get node {} -o json", sh_quote(node));
    let command = &command;
    Wait::for_(format!("node {node} to be Ready at {version}"), limit)
        .every(Duration::from_millis(500))
        .hint("raise settings.timeouts.nodeReady if the host is slow")
        .until(move || async move {
            let out = ctl.run(command).await?;
            let last = if out.status == 0 {
                match serde_json::from_str::<Value>(&out.stdout) {
                    Ok(v) => {
                        let ready = v["status"]["conditions"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|c| c["type"] == "Ready")
                            .map(|c| {
                                (
                                    c["status"].as_str().unwrap_or("").to_string(),
                                    c["message"].as_str().unwrap_or("").to_string(),
                                )
                            });
                        let have = v["status"]["nodeInfo"]["kubeletVersion"].as_str().unwrap_or("");
                        match ready {
                            Some((s, _)) if s == "True" && have == version => return Ok(Poll::Done(())),
                            Some((s, m)) => format!("Ready={s} {m} kubeletVersion={have}"),
                            None => format!("no Ready condition yet (kubeletVersion={have})"),
                        }
                    }
                    Err(e) => format!("unreadable answer: {e}"),
                }
            } else {
                out.stderr.trim().lines().last().unwrap_or("").to_string()
            };
            ctx.progress(format!("waiting for {node}: {last}"));
            Ok::<_, StepError>(Poll::Pending(last))
        })
        .await
}
