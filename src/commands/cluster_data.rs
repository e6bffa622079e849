//! The host clusters' datastores in a backup, and their restore.
//!
//! * K3s with embedded etcd (several servers; the first has `cluster-init`):
//!   `k3s etcd-snapshot save` on a server, the file fetched over SSH and
//!   deleted there. Restore follows K3s's documented flow: K3s stopped on
//!   every server, `k3s server --cluster-reset --cluster-reset-restore-path`
//!   on the first, the other servers' `server/db` removed, the first started,
//!   then the others, which rejoin.
//! * K3s on SQLite (one server, no `cluster-init`) has no etcd to snapshot,
//!   and a copy of a live SQLite database is not consistent: it is left out,
//!   and `backup` says so.
//! * Kubespray: `etcdctl snapshot save` on the first etcd member with the
//!   client certificates and endpoint Kubespray writes into `/etc/etcd.env`.
//!   Restore: every member's data directory is rebuilt from the same snapshot
//!   (`etcdutl`/`etcdctl snapshot restore` with the member's own name and
//!   peer URL and the cluster's initial-cluster, all from `/etc/etcd.env`)
//!   beside the live one, etcd is stopped on every member, the directories
//!   swapped (the old one kept beside), and etcd started on all at once.

use std::io::Write;
use std::sync::Arc;

use crate::components::k3s;
use crate::drivers::ssh::{sh_quote, SshHost};
use crate::inventory::{ClusterType, Loaded};
use crate::state::{State, StepStatus};
use crate::steps::hosts::{connection, HostConn};
use crate::steps::remote::Connector;

/// Archive members of cluster datastores live under this prefix.
pub(super) const PREFIX: &str = "clusters/";

const K3S_SNAPSHOTS: &str = "/var/lib/rancher/k3s/server/db/snapshots";
const K3S_DB: &str = "/var/lib/rancher/k3s/server/db";
/// Where Kubespray (etcd_deployment_type: host) writes etcd's settings,
/// including the `ETCDCTL_*` client certificate and endpoint.
const ETCD_ENV: &str = "/etc/etcd.env";
/// Kubespray's `bin_dir`, before the rest of PATH.
const PATH: &str = "PATH=/usr/local/bin:$PATH";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    K3sEtcd,
    KubesprayEtcd,
}

/// One cluster whose datastore goes into the archive.
pub(super) struct Datastore {
    pub cluster: String,
    pub kind: Kind,
    /// K3s: the servers, the first (cluster-init) first. Kubespray: the etcd members.
    pub members: Vec<HostConn>,
}

impl Datastore {
    pub fn member_path(&self) -> String {
        member_path(&self.cluster)
    }

    pub fn title(&self) -> &'static str {
        match self.kind {
            Kind::K3sEtcd => "K3s embedded etcd",
            Kind::KubesprayEtcd => "Kubespray etcd",
        }
    }
}

pub(super) fn member_path(cluster: &str) -> String {
    format!("{PREFIX}{cluster}/etcd.snapshot")
}

fn done(state: &State, id: &str) -> bool {
    state.steps.get(id).is_some_and(|r| r.status == StepStatus::Done)
}

/// The installed clusters of the inventory whose datastore can be
/// snapshotted, and a sentence for each one whose cannot.
pub(super) fn datastores(loaded: &Loaded, state: &State) -> (Vec<Datastore>, Vec<String>) {
    let mut stores = Vec::new();
    let mut left_out = Vec::new();
    let conns = |names: &[String]| names.iter().filter_map(|n| connection(loaded, n)).collect::<Vec<_>>();
    for c in &loaded.inventory.clusters {
        match (c.cluster_type, &c.k3s, &c.kubespray) {
            (ClusterType::K3s, Some(k), _) => {
                let Some(first) = k.servers.first() else { continue };
                if !done(state, &k3s::node_step_id(&c.name, k3s::Role::Server, first)) {
                    continue;
                }
                if k.servers.len() == 1 {
                    left_out.push(format!(
                        "K3s cluster `{}` keeps its data in SQLite on {first} (one server, no embedded etcd): \
                         nothing to snapshot, and a copy of the live database would not be consistent, so it is \
                         not in this archive. Copy {K3S_DB}/ with K3s stopped, as K3s documents",
                        c.name
                    ));
                    continue;
                }
                stores.push(Datastore {
                    cluster: c.name.clone(),
                    kind: Kind::K3sEtcd,
                    members: conns(&k.servers),
                });
            }
            (ClusterType::Kubespray, _, Some(ks)) => {
                if !done(state, &format!("kubespray/{}/cluster", c.name)) {
                    continue;
                }
                let members = if ks.etcd.is_empty() {
                    &ks.control_plane
                } else {
                    &ks.etcd
                };
                stores.push(Datastore {
                    cluster: c.name.clone(),
                    kind: Kind::KubesprayEtcd,
                    members: conns(members),
                });
            }
            _ => {}
        }
    }
    (stores, left_out)
}

pub(super) fn stderr_of(out: &crate::drivers::ssh::Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(4)..].join("; ")
}

/// Run `script` on `host`: its trimmed stdout, or an error naming the host,
/// `what` was being done, the exit status and the end of stderr.
pub(super) async fn run(host: &SshHost, what: &str, script: &str) -> Result<String, String> {
    let out = host.run(script).await.map_err(|e| e.to_string())?;
    if out.status != 0 {
        return Err(format!(
            "{}: {what} failed (exit {}): {}",
            host.name(),
            out.status,
            stderr_of(&out)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The script that sources Kubespray's etcd settings, or stops naming the file.
fn etcd_env() -> String {
    format!(
        "[ -r {ETCD_ENV} ] || {{ echo '{ETCD_ENV} is missing: not an etcd member Kubespray installed' >&2; exit 3; }}\n\
         set -a; . {ETCD_ENV}; set +a\n\
         [ -n \"$ETCD_DATA_DIR\" ] || {{ echo 'ETCD_DATA_DIR is not set in {ETCD_ENV}' >&2; exit 3; }}\n"
    )
}

/// Take the snapshot on one member and stream it into `out`; the copy on
/// the host is removed whatever happens.
async fn snapshot_on(host: &SshHost, ds: &Datastore, name: &str, out: &mut dyn Write) -> Result<(), String> {
    let bin = k3s::REMOTE_BINARY;
    let take = match ds.kind {
        Kind::K3sEtcd => format!(
            "set -e\n{bin} etcd-snapshot save --name {name} >&2\n\
             f=$(ls -1 {K3S_SNAPSHOTS} | grep '^{name}-' | head -n 1)\n\
             [ -n \"$f\" ] || {{ echo 'the snapshot {name}-* is not in {K3S_SNAPSHOTS}' >&2; exit 1; }}\n\
             echo \"{K3S_SNAPSHOTS}/$f\"\n"
        ),
        // etcdctl 3.4's `snapshot save` has no deadline: refused by a
        // server that wants another client certificate, it retries the
        // handshake for ever. `endpoint health` gives up within seconds.
        Kind::KubesprayEtcd => format!(
            "set -e\n{}{PATH}\n\
             f=$(mktemp \"$(dirname \"$ETCD_DATA_DIR\")/{name}.XXXXXX\")\n\
             ETCDCTL_API=3 etcdctl endpoint health >&2 || {{ rm -f \"$f\"; echo \"etcd at $ETCDCTL_ENDPOINTS does not answer with the client settings of {ETCD_ENV}\" >&2; exit 1; }}\n\
             ETCDCTL_API=3 etcdctl snapshot save \"$f\" >&2 || {{ rm -f \"$f\"; exit 1; }}\n\
             echo \"$f\"\n",
            etcd_env()
        ),
    };
    let file = run(host, "taking an etcd snapshot", &take).await?;
    let file = file.lines().last().unwrap_or_default().to_string();
    let fetched = host.download(&file, out).await.map_err(|e| e.to_string());
    // K3s keeps a record of each snapshot: its own command removes both.
    let cleanup = match ds.kind {
        Kind::K3sEtcd => format!(
            "{bin} etcd-snapshot delete {} >&2",
            sh_quote(file.rsplit('/').next().unwrap_or_default())
        ),
        Kind::KubesprayEtcd => format!("rm -f {}", sh_quote(&file)),
    };
    if let Err(e) = run(host, "removing the snapshot taken for the backup", &cleanup).await {
        tracing::warn!("{e}");
    }
    fetched.map(|_| ())
}

/// Stream the cluster's etcd snapshot into `out`, from the first member
/// that can take one. Returns the host it came from.
pub(super) async fn snapshot(
    connector: &Connector,
    ds: &Datastore,
    name: &str,
    out: &mut dyn Write,
) -> Result<String, String> {
    let mut problems = Vec::new();
    for member in &ds.members {
        let host = match connector.host(member).await {
            Ok(h) => h,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        // Nothing written yet: a failure here lets the next member try.
        let mut probe = Counting {
            inner: &mut *out,
            written: 0,
        };
        match snapshot_on(&host, ds, name, &mut probe).await {
            Ok(()) => return Ok(member.name.clone()),
            Err(e) if probe.written == 0 => problems.push(e),
            Err(e) => return Err(e),
        }
    }
    Err(format!(
        "cluster `{}` ({}): no snapshot could be taken: {}",
        ds.cluster,
        ds.title(),
        problems.join("; ")
    ))
}

struct Counting<'a> {
    inner: &'a mut dyn Write,
    written: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Put the snapshot at `local` back as the cluster's datastore. Every
/// member is checked before any is touched.
pub(super) async fn restore(
    connector: &Connector,
    ds: &Datastore,
    local: &std::path::Path,
    stamp: &str,
    say: &(dyn Fn(String) + Sync),
) -> Result<(), String> {
    let mut hosts = Vec::new();
    for m in &ds.members {
        hosts.push(connector.host(m).await.map_err(|e| e.to_string())?);
    }
    match ds.kind {
        Kind::K3sEtcd => restore_k3s(&hosts, local, stamp, say).await,
        Kind::KubesprayEtcd => restore_kubespray(&hosts, local, stamp, say).await,
    }
}

async fn all(hosts: &[Arc<SshHost>], what: &str, script: impl Fn(usize) -> String) -> Result<Vec<String>, String> {
    let runs = hosts.iter().enumerate().map(|(i, h)| {
        let s = script(i);
        async move { run(h, what, &s).await }
    });
    let results = futures::future::join_all(runs).await;
    let errors: Vec<String> = results.iter().filter_map(|r| r.as_ref().err().cloned()).collect();
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    Ok(results.into_iter().map(Result::unwrap_or_default).collect())
}

async fn restore_k3s(
    servers: &[Arc<SshHost>],
    local: &std::path::Path,
    stamp: &str,
    say: &(dyn Fn(String) + Sync),
) -> Result<(), String> {
    let bin = k3s::REMOTE_BINARY;
    // Every server must be a K3s server we can restart before one is stopped.
    all(servers, "checking K3s before the restore", |_| {
        format!(
            "[ -x {bin} ] || {{ echo '{bin} is missing: install K3s first (apply)' >&2; exit 3; }}\n\
             [ -f /etc/systemd/system/k3s.service ] || {{ echo 'no k3s.service: not a K3s server' >&2; exit 3; }}\n\
             command -v systemctl >/dev/null || {{ echo 'no systemctl on this host' >&2; exit 3; }}\n"
        )
    })
    .await?;
    let first = &servers[0];
    let remote = format!("/var/lib/rancher/k3s/server/nautes-restore-{stamp}.snapshot");
    first
        .upload(local, &remote, 0o600)
        .await
        .map_err(|e| format!("sending the snapshot: {e}"))?;
    say(format!("stopping K3s on {} server(s)", servers.len()));
    all(servers, "stopping K3s", |_| "systemctl stop k3s".into()).await?;
    say(format!(
        "{}: k3s server --cluster-reset from the snapshot",
        first.name()
    ));
    run(
        first,
        "k3s server --cluster-reset",
        &format!(
            "{bin} server --cluster-reset --cluster-reset-restore-path={} >&2",
            sh_quote(&remote)
        ),
    )
    .await?;
    // The others must forget the old cluster to rejoin the restored one.
    all(&servers[1..], "removing the old etcd member data", |_| {
        format!("rm -rf {K3S_DB}")
    })
    .await?;
    run(first, "starting K3s", "systemctl start k3s").await?;
    for s in &servers[1..] {
        say(format!("{}: rejoining", s.name()));
        run(s, "starting K3s", "systemctl start k3s").await?;
    }
    run(
        first,
        "removing the uploaded snapshot",
        &format!("rm -f {}", sh_quote(&remote)),
    )
    .await?;
    Ok(())
}

async fn restore_kubespray(
    members: &[Arc<SshHost>],
    local: &std::path::Path,
    stamp: &str,
    say: &(dyn Fn(String) + Sync),
) -> Result<(), String> {
    // Settings and tools on every member, before anything is stopped.
    let dirs = all(members, "checking etcd before the restore", |_| {
        format!(
            "set -e\n{}{PATH}\n\
             for v in ETCD_NAME ETCD_INITIAL_CLUSTER ETCD_INITIAL_ADVERTISE_PEER_URLS; do\n\
               eval \"x=\\${{$v:-}}\"; [ -n \"$x\" ] || {{ echo \"$v is not set in {ETCD_ENV}\" >&2; exit 3; }}\n\
             done\n\
             command -v etcdutl >/dev/null || command -v etcdctl >/dev/null || {{ echo 'neither etcdutl nor etcdctl is installed' >&2; exit 3; }}\n\
             command -v systemctl >/dev/null || {{ echo 'no systemctl on this host' >&2; exit 3; }}\n\
             dirname \"$ETCD_DATA_DIR\"\n",
            etcd_env()
        )
    })
    .await?;
    let remotes: Vec<String> = dirs
        .iter()
        .map(|d| format!("{d}/nautes-restore-{stamp}.snapshot"))
        .collect();
    let uploads = members.iter().zip(&remotes).map(|(h, r)| h.upload(local, r, 0o600));
    for r in futures::future::join_all(uploads).await {
        r.map_err(|e| format!("sending the snapshot: {e}"))?;
    }
    // Each member's new data directory, built beside the live one while
    // etcd still runs: a bad snapshot stops here with nothing changed.
    say(format!("rebuilding etcd's data on {} member(s)", members.len()));
    all(members, "etcd snapshot restore", |i| {
        format!(
            "set -e\n{}{PATH}\nnew=\"$ETCD_DATA_DIR.nautes-restore\"\nrm -rf \"$new\"\n\
             if command -v etcdutl >/dev/null; then tool=etcdutl; else tool=etcdctl; export ETCDCTL_API=3; fi\n\
             $tool snapshot restore {snap} --name \"$ETCD_NAME\" --initial-cluster \"$ETCD_INITIAL_CLUSTER\" \
             --initial-cluster-token \"${{ETCD_INITIAL_CLUSTER_TOKEN:-etcd-cluster}}\" \
             --initial-advertise-peer-urls \"$ETCD_INITIAL_ADVERTISE_PEER_URLS\" --data-dir \"$new\" >&2\n\
             chmod 700 \"$new\"\n",
            etcd_env(),
            snap = sh_quote(&remotes[i])
        )
    })
    .await?;
    say("stopping etcd on every member, swapping in the restored data".into());
    all(members, "stopping etcd", |_| "systemctl stop etcd".into()).await?;
    all(members, "swapping the data directory", |i| {
        format!(
            "set -e\n{}[ ! -e \"$ETCD_DATA_DIR\" ] || mv \"$ETCD_DATA_DIR\" \"$ETCD_DATA_DIR.before-restore-{stamp}\"\n\
             mv \"$ETCD_DATA_DIR.nautes-restore\" \"$ETCD_DATA_DIR\"\nrm -f {}\n",
            etcd_env(),
            sh_quote(&remotes[i])
        )
    })
    .await?;
    // All at once: a member waits for a quorum of its peers to start.
    all(members, "starting etcd", |_| "systemctl start etcd".into()).await?;
    let health = format!(
        "{}{PATH}\nfor i in $(seq 1 60); do ETCDCTL_API=3 etcdctl endpoint health >/dev/null 2>&1 && exit 0; sleep 0.5; done\n\
         ETCDCTL_API=3 etcdctl endpoint health >&2\n",
        etcd_env()
    );
    all(members, "waiting for etcd to be healthy", |_| health.clone()).await?;
    Ok(())
}
