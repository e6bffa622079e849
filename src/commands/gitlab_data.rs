//! GitLab's data in a backup, for a GitLab this installer placed on a host
//! of its own (Omnibus package, `components.gitlab.placement: host`), done
//! over SSH the way GitLab documents it for the Linux package.
//!
//! * Backup: `gitlab-backup create STRATEGY=copy` while GitLab runs (it
//!   never stops a service), the `<id>_gitlab_backup.tar` it made found in
//!   the backup directory (`gitlab_rails['backup_path']` of gitlab.rb,
//!   default `/var/opt/gitlab/backups`) by listing it before and after, and
//!   streamed into the archive, then removed from the host (the archive is
//!   the copy; GitLab's own backups there are left alone). gitlab-backup
//!   leaves out `/etc/gitlab/gitlab-secrets.json` (the keys of the encrypted
//!   columns) and `/etc/gitlab/gitlab.rb`, so both are fetched beside it.
//!   All three are encrypted in the archive; `gitlab/backup.json` records
//!   the host, the backup's id and the installed `gitlab-ce` version.
//! * Restore: gitlab-backup restores only into the version that made the
//!   backup, so a host with another installed version is refused before
//!   anything is sent. Then: gitlab-secrets.json and gitlab.rb put back
//!   (root, 0600), `gitlab-ctl reconfigure`, puma and sidekiq stopped, the
//!   tar placed in the backup directory owned by git,
//!   `GITLAB_ASSUME_YES=1 gitlab-backup restore BACKUP=<id>`, `gitlab-ctl
//!   reconfigure`, `gitlab-ctl restart`, and a wait until `/-/readiness`
//!   answers on the host (GitLab answers it only to its monitoring
//!   whitelist, which holds the host's own address) before the tar is
//!   removed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::cluster_data::{run, stderr_of};
use crate::components::service_hosts::{ServiceHostSpec, GITLAB_STEP_ID};
use crate::drivers::ssh::{sh_quote, SshHost};
use crate::plan::Plan;
use crate::state::{State, StepStatus};
use crate::steps::hosts::HostConn;
use crate::steps::remote::Connector;

/// Archive members of GitLab's data (under `gitlab/`).
pub(super) const TAR_MEMBER: &str = "gitlab/gitlab_backup.tar";
pub(super) const SECRETS_MEMBER: &str = "gitlab/gitlab-secrets.json";
pub(super) const RB_MEMBER: &str = "gitlab/gitlab.rb";
pub(super) const INFO_MEMBER: &str = "gitlab/backup.json";

const CTL: &str = "/opt/gitlab/bin/gitlab-ctl";
const BACKUP: &str = "/opt/gitlab/bin/gitlab-backup";
const SECRETS: &str = "/etc/gitlab/gitlab-secrets.json";
const RB: &str = "/etc/gitlab/gitlab.rb";
/// Where the playbook puts our CA; GitLab trusts it, and so does the wait.
const CA: &str = "/etc/gitlab/trusted-certs/nautes-ca.crt";
const DEFAULT_DIR: &str = "/var/opt/gitlab/backups";
const VERSION_QUERY: &str = "dpkg-query -W -f='${Version}' gitlab-ce";

/// The GitLab whose data goes into, or comes back from, the archive.
pub(super) struct Target {
    pub host: HostConn,
    /// What the host checks readiness at (`https://<its address>`).
    pub check_url: String,
}

/// What `gitlab/backup.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Info {
    pub host: String,
    /// The `gitlab-ce` package version that made the backup.
    pub version: String,
    /// gitlab-backup's id: the tar is `<id>_gitlab_backup.tar`.
    pub id: String,
}

/// The GitLab the plan places on a host, when `state` records it installed.
pub(super) fn target(plan: &Plan, state: &State) -> Option<Target> {
    let step = plan.steps.iter().find(|s| s.id == GITLAB_STEP_ID)?;
    let spec: ServiceHostSpec = serde_json::from_value(step.spec.clone()).ok()?;
    let done = state
        .steps
        .get(GITLAB_STEP_ID)
        .is_some_and(|r| r.status == StepStatus::Done);
    if !done {
        return None;
    }
    let check_url = spec
        .vars
        .get("gitlab_check_url")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| spec.url.clone());
    Some(Target {
        host: spec.host,
        check_url,
    })
}

/// Whether the inventory places GitLab on a host at all.
pub(super) fn placed_on_host(plan: &Plan) -> bool {
    plan.steps.iter().any(|s| s.id == GITLAB_STEP_ID)
}

/// `gitlab_rails['backup_path']` as gitlab.rb sets it (the last assignment
/// of a plain string wins, as in Ruby), else Omnibus's default.
pub(super) fn backup_dir(rb: &str) -> String {
    let mut found = None;
    for line in rb.lines() {
        let line = line.trim();
        let rest = ["gitlab_rails['backup_path']", "gitlab_rails[\"backup_path\"]"]
            .iter()
            .find_map(|k| line.strip_prefix(k));
        let Some(rest) = rest else { continue };
        let Some(value) = rest.trim_start().strip_prefix('=') else {
            continue;
        };
        let value = value.trim();
        let Some(quote) = value.chars().next().filter(|c| *c == '\'' || *c == '"') else {
            continue;
        };
        if let Some(end) = value[1..].find(quote) {
            let path = &value[1..1 + end];
            if path.starts_with('/') {
                found = Some(path.trim_end_matches('/').to_string());
            }
        }
    }
    found.unwrap_or_else(|| DEFAULT_DIR.to_string())
}

/// The installed `gitlab-ce` version, once the tools are known to be there.
async fn installed_version(host: &SshHost) -> Result<String, String> {
    let script = format!(
        "[ -x {BACKUP} ] && [ -x {CTL} ] || {{ echo 'GitLab (Omnibus) is not installed here: no {BACKUP}' >&2; exit 3; }}\n\
         {VERSION_QUERY}\n"
    );
    let v = run(host, "reading the installed GitLab version", &script).await?;
    if v.is_empty() {
        return Err(format!("{}: dpkg knows no installed gitlab-ce", host.name()));
    }
    Ok(v)
}

/// A backup made on the host, not yet fetched.
pub(super) struct Made {
    pub info: Info,
    /// The tar on the host.
    pub remote: String,
    pub rb: Vec<u8>,
    pub secrets: Vec<u8>,
}

/// Read the configuration and its secrets, then `gitlab-backup create`.
pub(super) async fn create(host: &SshHost) -> Result<Made, String> {
    let version = installed_version(host).await?;
    let read = |path: &'static str| async move {
        host.read(path)
            .await
            .map_err(|e| format!("{}: cannot read {path}: {e}", host.name()))
    };
    let rb = read(RB).await?;
    let secrets = read(SECRETS).await?;
    let dir = backup_dir(&String::from_utf8_lossy(&rb));
    let d = sh_quote(&dir);
    // Only the tar this run made is ours: listed before and after.
    let script = format!(
        "set -e\nlist() {{ ls -1 {d} 2>/dev/null | grep '_gitlab_backup\\.tar$' || true; }}\n\
         before=$(list)\n\
         {BACKUP} create STRATEGY=copy >&2\n\
         new=''\nfor f in $(list); do\n  case \"\n$before\n\" in *\"\n$f\n\"*) ;; *) new=\"$new$f \" ;; esac\ndone\n\
         set -- $new\n\
         [ $# -eq 1 ] || {{ echo \"gitlab-backup create left $# new backups in {dir} (expected one): $new\" >&2; exit 1; }}\n\
         echo \"$1\"\n"
    );
    let file = run(host, "gitlab-backup create", &script).await?;
    let file = file.lines().last().unwrap_or_default().to_string();
    let id = file
        .strip_suffix("_gitlab_backup.tar")
        .ok_or_else(|| format!("{}: unexpected backup file name {file}", host.name()))?
        .to_string();
    Ok(Made {
        info: Info {
            host: host.name().to_string(),
            version,
            id,
        },
        remote: format!("{dir}/{file}"),
        rb,
        secrets,
    })
}

/// Remove the tar `create` made, once fetched (or not).
pub(super) async fn remove(host: &SshHost, remote: &str) -> Result<(), String> {
    run(
        host,
        "removing the GitLab backup made for the archive",
        &format!("rm -f {}", sh_quote(remote)),
    )
    .await
    .map(|_| ())
}

pub(super) async fn connect(connector: &Connector, target: &Target) -> Result<Arc<SshHost>, String> {
    connector.host(&target.host).await.map_err(|e| e.to_string())
}

/// The staged (decrypted) members a restore puts back.
pub(super) struct Staged<'a> {
    pub info: &'a Info,
    pub tar: &'a Path,
    pub secrets: &'a Path,
    pub rb: &'a Path,
}

/// Put GitLab's data back on its host.
pub(super) async fn restore(
    host: &SshHost,
    target: &Target,
    staged: &Staged<'_>,
    wait: Duration,
    say: &(dyn Fn(String) + Sync),
) -> Result<(), String> {
    let name = host.name().to_string();
    let installed = installed_version(host).await?;
    if installed != staged.info.version {
        return Err(format!(
            "{name} has gitlab-ce {installed} installed, but the archived backup was made by gitlab-ce {}: \
             gitlab-backup restores only into the version that made the backup. Nothing on {name} was changed; \
             install {} there (components.gitlab.version, then apply) and run restore again",
            staged.info.version, staged.info.version
        ));
    }
    let rb = std::fs::read_to_string(staged.rb).map_err(|e| format!("{}: {e}", staged.rb.display()))?;
    let dir = backup_dir(&rb);
    let remote = format!("{dir}/{}_gitlab_backup.tar", staged.info.id);
    say(format!("{name}: putting back {SECRETS} and {RB}"));
    for (local, path) in [(staged.secrets, SECRETS), (staged.rb, RB)] {
        host.upload(local, path, 0o600)
            .await
            .map_err(|e| format!("sending {path}: {e}"))?;
    }
    run(
        host,
        "setting the owner of the configuration",
        &format!("chown root:root {SECRETS} {RB}"),
    )
    .await?;
    run(host, "gitlab-ctl reconfigure", &format!("{CTL} reconfigure >&2")).await?;
    let stopped = |e: String| {
        format!("{e}\nGitLab on {name} may be left with puma and sidekiq stopped: fix the cause and run restore --gitlab again (or `gitlab-ctl start` there)")
    };
    say(format!("{name}: stopping puma and sidekiq"));
    for service in ["puma", "sidekiq"] {
        run(
            host,
            &format!("gitlab-ctl stop {service}"),
            &format!("{CTL} stop {service} >&2"),
        )
        .await
        .map_err(stopped)?;
    }
    say(format!("{name}: gitlab-backup restore BACKUP={}", staged.info.id));
    host.upload(staged.tar, &remote, 0o600)
        .await
        .map_err(|e| stopped(format!("sending the GitLab backup: {e}")))?;
    run(
        host,
        "handing the backup to git",
        &format!("chown git:git {}", sh_quote(&remote)),
    )
    .await
    .map_err(stopped)?;
    run(
        host,
        "gitlab-backup restore",
        &format!(
            "GITLAB_ASSUME_YES=1 {BACKUP} restore BACKUP={} >&2 </dev/null",
            sh_quote(&staged.info.id)
        ),
    )
    .await
    .map_err(stopped)?;
    run(host, "gitlab-ctl reconfigure", &format!("{CTL} reconfigure >&2"))
        .await
        .map_err(stopped)?;
    run(host, "gitlab-ctl restart", &format!("{CTL} restart >&2"))
        .await
        .map_err(stopped)?;
    say(format!("{name}: waiting for GitLab to be ready"));
    wait_ready(host, target, wait).await?;
    remove(host, &remote).await
}

/// Until GitLab's readiness check answers 200 on the host itself.
async fn wait_ready(host: &SshHost, target: &Target, limit: Duration) -> Result<(), String> {
    let url = format!("{}/-/readiness", target.check_url.trim_end_matches('/'));
    let probe = format!(
        "c=$(command -v curl || echo /opt/gitlab/embedded/bin/curl)\n\
         \"$c\" -fsS -o /dev/null --max-time 10 --cacert {CA} {}\n",
        sh_quote(&url)
    );
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let out = host.run(&probe).await.map_err(|e| e.to_string())?;
        if out.status == 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "{}: GitLab is not ready at {url} {limit:?} after the restore: {}",
                host.name(),
                stderr_of(&out)
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backup_directory_is_the_last_plain_assignment_in_gitlab_rb() {
        assert_eq!(backup_dir(""), "/var/opt/gitlab/backups");
        assert_eq!(
            backup_dir("external_url 'https://g'\n# gitlab_rails['backup_path'] = '/commented'\n"),
            "/var/opt/gitlab/backups"
        );
        assert_eq!(
            backup_dir("gitlab_rails['backup_path'] = '/srv/a'\n  gitlab_rails[\"backup_path\"]=\"/srv/b/\"\n"),
            "/srv/b"
        );
        // Not a plain absolute path: Omnibus's default stays.
        assert_eq!(
            backup_dir("gitlab_rails['backup_path'] = ENV['X']\n"),
            "/var/opt/gitlab/backups"
        );
        assert_eq!(
            backup_dir("gitlab_rails['backup_path'] = 'relative'\n"),
            "/var/opt/gitlab/backups"
        );
        assert_eq!(
            backup_dir("gitlab_rails['backup_keep_time'] = 3\n"),
            "/var/opt/gitlab/backups"
        );
    }
}
