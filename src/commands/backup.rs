//! `backup` and `restore`: one archive (see [`crate::archive`]) with the
//! state, the outputs, the inventory, the clusters' etcd
//! ([`cluster_data`]), GitLab's data when it is on a host of ours
//! ([`gitlab_data`]) and, for a Vault/OpenBao this installer initialised,
//! a raft snapshot taken through its API while it runs. Restore checks the whole archive before it touches anything,
//! puts OpenBao's data back first (the step most likely to fail, and one
//! that needs only the staged copy of the credentials), then the files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::apply::{absolute, create_private_dir};
use super::cluster_data;
use super::gitlab_data;
use super::{load_and_plan, outputs_dir, state_path};
use crate::archive::{self, Encrypting, Hashing, Kdf, Keys, Manifest, Member};
use crate::cli::{GlobalArgs, Output, PassphraseArg};
use crate::components::vault::{self as vault_component, VaultSpec, VaultTarget};
use crate::drivers::vault::Vault;
use crate::engine::lock::{LockError, RunLock};
use crate::exit;
use crate::inventory::{Loaded, SecretRef};
use crate::plan::Plan;
use crate::secret::Secret;
use crate::state::State;
use crate::steps::remote::Connector;

const STATE_MEMBER: &str = "state.json";
const OUTPUTS_PREFIX: &str = "outputs/";
const INVENTORY_PREFIX: &str = "inventory/";
const SNAPSHOT_MEMBER: &str = "openbao/raft.snap";

/// A directory removed when dropped, whatever happened.
struct Staging(PathBuf);

impl Staging {
    fn new(path: PathBuf) -> std::io::Result<Staging> {
        let _ = std::fs::remove_dir_all(&path);
        create_private_dir(&path)?;
        Ok(Staging(path))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn say(g: &GlobalArgs, line: impl AsRef<str>) {
    if g.output == Output::Text && !g.quiet {
        eprintln!("{}", line.as_ref());
    }
}

fn fail(code: u8, message: impl AsRef<str>, hint: Option<&str>) -> u8 {
    eprintln!("error: {}", message.as_ref());
    if let Some(h) = hint {
        eprintln!("hint: {h}");
    }
    code
}

/// The passphrase, from its reference. A file must be its owner's alone,
/// as the inventory's secret files must.
fn passphrase(p: &PassphraseArg) -> Result<Secret, u8> {
    if let Some(file) = &p.passphrase_file {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(file) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                return Err(fail(
                    exit::USAGE,
                    format!("the passphrase file {} can be read by others", file.display()),
                    Some(&format!("chmod 600 {}", file.display())),
                ))
            }
            Ok(_) => {}
            Err(e) => {
                return Err(fail(
                    exit::USAGE,
                    format!("cannot read the passphrase file {}: {e}", file.display()),
                    None,
                ))
            }
        }
    }
    let reference = SecretRef {
        env: p.passphrase_env.clone(),
        file: p.passphrase_file.clone(),
    };
    match reference.resolve(Path::new(".")) {
        Ok(s) if s.expose().is_empty() => Err(fail(exit::USAGE, "the passphrase is empty", None)),
        Ok(s) => Ok(s),
        Err(e) => Err(fail(
            exit::USAGE,
            format!("no passphrase: {e}"),
            Some("pass --passphrase-env NAME or --passphrase-file PATH"),
        )),
    }
}

fn lock(g: &GlobalArgs, command: &str) -> Result<RunLock, u8> {
    if let Err(e) = create_private_dir(&g.workdir) {
        return Err(fail(
            exit::STATE_ERROR,
            format!("cannot create workdir {}: {e}", g.workdir.display()),
            None,
        ));
    }
    match RunLock::acquire(&g.workdir, command) {
        Ok(l) => Ok(l),
        Err(LockError::Held { holder, .. }) => Err(fail(
            exit::LOCKED,
            format!("another nautes-install is running in this workdir: {holder}"),
            Some("wait for it to finish: a backup or restore needs the state at rest"),
        )),
        Err(e) => Err(fail(exit::STATE_ERROR, e.to_string(), None)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(exit::STEP_FAILED, format!("cannot start the async runtime: {e}"), None))
}

/// The Vault this inventory configures, with its `vault/configure` spec.
fn vault_of(loaded: &Loaded, plan: &Plan) -> Option<(VaultTarget, VaultSpec)> {
    let target = vault_component::target(loaded)?;
    let step = plan.steps.iter().find(|s| s.id == vault_component::STEP_ID)?;
    let spec = serde_json::from_value(step.spec.clone()).ok()?;
    Some((target, spec))
}

/// The CA to trust for Vault: the inventory's file, or (for a Vault on a
/// host of ours) the CA our PKI step recorded. `relocate` maps a path
/// under the outputs to where it is readable now.
fn vault_ca(
    target: &VaultTarget,
    state: &State,
    relocate: impl Fn(&Path) -> PathBuf,
) -> Result<Option<Vec<u8>>, String> {
    let path = match (&target.ca_file, &target.host_step) {
        (Some(p), _) => p.clone(),
        (None, Some(_)) => match state
            .steps
            .get(crate::components::certificates::STEP_ID)
            .and_then(|r| r.outputs["ca"]["cert"].as_str())
        {
            Some(p) => relocate(Path::new(p)),
            None => return Err("no CA recorded for Vault (the state has no finished `pki` step)".into()),
        },
        (None, None) => return Ok(None),
    };
    std::fs::read(&path)
        .map(Some)
        .map_err(|e| format!("cannot read the CA for Vault, {}: {e}", path.display()))
}

fn client(target: &VaultTarget, ca: Option<&[u8]>, loaded: &Loaded) -> Result<Vault, String> {
    // A snapshot can be large: the whole-download limit, not one API call's.
    let limits = super::limits(&loaded.inventory.settings.timeouts);
    Vault::new(&target.url, ca, limits.download.max(limits.http))
}

/// Unseal keys (in share order) and root token kept under `dir` by the run
/// that initialised Vault; `None` when there is no root token there.
fn credentials(dir: &Path) -> Option<(Vec<Secret>, Secret)> {
    let read = |p: PathBuf| std::fs::read_to_string(p).ok().map(|t| Secret::new(t.trim()));
    let root = read(dir.join("root-token"))?;
    let keys = (1..)
        .map(|i| read(dir.join(format!("unseal-key-{i}"))))
        .take_while(Option::is_some)
        .flatten()
        .collect();
    Some((keys, root))
}

/// Files under `dir`, as paths relative to it, sorted. Symlinks are left
/// out: outputs are files we wrote.
fn files_under(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir.join(rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let t = e.file_type()?;
        let r = rel.join(e.file_name());
        if t.is_dir() {
            files_under(dir, &r, out)?;
        } else if t.is_file() {
            out.push(r);
        }
    }
    Ok(())
}

/// Stages members for the archive: each stored (encrypted or not) into a
/// file while hashing, so the manifest can lead the archive.
struct Packer<'a> {
    dir: PathBuf,
    keys: &'a Keys,
    members: Vec<Member>,
    staged: BTreeMap<String, PathBuf>,
}

impl Packer<'_> {
    fn target(&mut self, path: &str) -> std::io::Result<PathBuf> {
        let file = self.dir.join(format!("{}", self.staged.len()));
        self.staged.insert(path.to_string(), file.clone());
        Ok(file)
    }

    /// Stage a member whose content `fill` writes.
    fn add(
        &mut self,
        path: &str,
        encrypted: bool,
        mode: u32,
        fill: impl FnOnce(&mut dyn std::io::Write) -> Result<(), String>,
    ) -> Result<(), String> {
        let file = self.target(path).map_err(|e| e.to_string())?;
        let out = archive::private_file(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut hashing = Hashing::new(std::io::BufWriter::new(out));
        if encrypted {
            let mut enc = Encrypting::new(&mut hashing, self.keys, path).map_err(|e| e.to_string())?;
            fill(&mut enc)?;
            enc.finish().map_err(|e| format!("{path}: {e}"))?;
        } else {
            fill(&mut hashing)?;
        }
        let (mut w, seen) = hashing.finish();
        std::io::Write::flush(&mut w).map_err(|e| format!("{}: {e}", file.display()))?;
        self.members.push(Member {
            path: path.to_string(),
            size: seen.size,
            sha256: seen.sha256,
            encrypted,
            mode,
        });
        Ok(())
    }

    /// Stage a file; encrypted when only its owner may read it.
    fn add_file(&mut self, path: &str, source: &Path, always_encrypt: bool) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(source)
            .map_err(|e| format!("{}: {e}", source.display()))?
            .permissions()
            .mode()
            & 0o777;
        let private = always_encrypt || mode & 0o077 == 0;
        self.add(path, private, mode, |w| {
            let mut f = std::fs::File::open(source).map_err(|e| format!("{}: {e}", source.display()))?;
            std::io::copy(&mut f, w)
                .map(|_| ())
                .map_err(|e| format!("{}: {e}", source.display()))
        })
    }
}

pub fn backup(g: &GlobalArgs, file: &Path, out: Option<&Path>, pass: &PassphraseArg) -> u8 {
    let started = std::time::Instant::now();
    let passphrase = match passphrase(pass) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let (loaded, plan) = match load_and_plan(g, file) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let (_lock, state) = match super::backend::from_inventory(g, &loaded) {
        // A shared state is read as one committed generation (its head
        // Secret names every chunk), so a run writing meanwhile cannot tear
        // it; the Lease is left to the runs that change things.
        kube @ super::backend::Where::Kube(_) => match super::backend::load_blocking(&kube) {
            Ok(s) if !s.steps.is_empty() => (None, s),
            Ok(_) => {
                return fail(
                    exit::STATE_ERROR,
                    "nothing to back up: the shared state records no steps",
                    Some("run backup for an inventory that `apply` installed"),
                )
            }
            Err(code) => return code,
        },
        super::backend::Where::Local(state_file) => {
            if !state_file.is_file() {
                return fail(
                    exit::STATE_ERROR,
                    format!("nothing to back up: no state in {}", g.workdir.display()),
                    Some("run backup where `apply` ran, or pass its --workdir"),
                );
            }
            let lock = match lock(g, "backup") {
                Ok(l) => l,
                Err(code) => return code,
            };
            match State::load(&state_file) {
                Ok(s) => (Some(lock), s),
                Err(e) => return fail(exit::STATE_ERROR, e.to_string(), None),
            }
        }
    };
    let out = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(archive_name("nautes-backup")));
    write_backup(g, &loaded, &plan, &state, &passphrase, &out, started)
}

/// `<prefix>-<UTC time>.tar.gz`, the time without separators so the name
/// sorts and needs no quoting (`nautes-backup-20261205T071200Z.tar.gz`).
pub(super) fn archive_name(prefix: &str) -> String {
    let stamp: String = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| *c != ':' && *c != '-')
        .collect();
    format!("{prefix}-{stamp}.tar.gz")
}

/// Write the archive of `state` (read under the caller's lock) and of the
/// rest `pack` gathers to `out`, and report it. `backup` calls it, and
/// `apply` before an upgrade when `settings.backupBeforeUpgrade` asks.
pub(super) fn write_backup(
    g: &GlobalArgs,
    loaded: &Loaded,
    plan: &Plan,
    state: &State,
    passphrase: &Secret,
    out: &Path,
    started: std::time::Instant,
) -> u8 {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = match Staging::new(parent.join(format!(".nautes-backup-staging-{}", std::process::id()))) {
        Ok(s) => s,
        Err(e) => {
            return fail(
                exit::STEP_FAILED,
                format!("cannot write next to {}: {e}", out.display()),
                None,
            )
        }
    };
    let kdf = match Kdf::fresh() {
        Ok(k) => k,
        Err(e) => return fail(exit::STEP_FAILED, format!("no randomness: {e}"), None),
    };
    let keys = match kdf.derive(passphrase) {
        Ok(k) => k,
        Err(e) => return fail(exit::STEP_FAILED, e, None),
    };
    let mut packer = Packer {
        dir: staging.0.clone(),
        keys: &keys,
        members: Vec::new(),
        staged: BTreeMap::new(),
    };
    // The state as the backend holds it: the local file byte for byte (or,
    // when a run that crashed left journal lines beside it, the state they
    // make, as it was loaded), a shared one as the generation just read.
    let state_file = match super::backend::from_inventory(g, loaded) {
        super::backend::Where::Local(path) if !crate::state::journal::path_of(&path).exists() => path,
        _ => {
            let path = staging.0.join("folded-state.json");
            let written = serde_json::to_vec_pretty(state)
                .map_err(|e| e.to_string())
                .and_then(|bytes| crate::util::write_atomic(&path, &bytes, 0o600).map_err(|e| e.to_string()));
            if let Err(e) = written {
                return fail(exit::STATE_ERROR, format!("cannot stage the shared state: {e}"), None);
            }
            path
        }
    };
    let left_out = match pack(g, loaded, plan, state, &state_file, &mut packer) {
        Ok(notes) => notes,
        Err(e) => return fail(exit::STEP_FAILED, e, None),
    };
    let mut manifest = Manifest {
        format: archive::FORMAT,
        created: crate::util::now_rfc3339(),
        installer_version: env!("CARGO_PKG_VERSION").to_string(),
        kdf,
        members: packer.members,
        mac: String::new(),
    };
    manifest.sign(&keys);
    let staged = packer.staged;
    // The plain record of GitLab's backup, read before staging goes.
    let gitlab: Option<gitlab_data::Info> = staged
        .get(gitlab_data::INFO_MEMBER)
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let Err(e) = crate::util::write_atomic_with(out, 0o600, |w| archive::write_archive(w, &manifest, &staged)) {
        return fail(exit::STEP_FAILED, format!("cannot write {}: {e}", out.display()), None);
    }
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    let encrypted = manifest.members.iter().filter(|m| m.encrypted).count();
    let snapshot = manifest.member(SNAPSHOT_MEMBER).map(|m| m.size);
    let clusters: Vec<&str> = manifest
        .members
        .iter()
        .filter_map(|m| m.path.strip_prefix(cluster_data::PREFIX))
        .filter_map(|rest| rest.split('/').next())
        .collect();
    match g.output {
        Output::Json => println!(
            "{}",
            json!({
                "event": "backup_done",
                "archive": out,
                "bytes": bytes,
                "members": manifest.members.iter().map(|m| json!({"path": m.path, "size": m.size, "encrypted": m.encrypted})).collect::<Vec<Value>>(),
                "vaultSnapshot": snapshot.is_some(),
                "clusters": clusters,
                "gitlab": gitlab,
                "notBackedUp": left_out,
                "seconds": started.elapsed().as_secs_f64(),
            })
        ),
        Output::Text => {
            if !g.quiet {
                println!(
                    "Backup written to {} ({bytes} bytes, 0600): {} members, {encrypted} of them encrypted{}.",
                    out.display(),
                    manifest.members.len(),
                    match snapshot {
                        Some(n) => format!(", OpenBao raft snapshot included ({n} bytes stored)"),
                        None => String::new(),
                    }
                );
                if !clusters.is_empty() {
                    println!("etcd snapshots of the clusters: {}.", clusters.join(", "));
                }
                if let Some(i) = &gitlab {
                    println!(
                        "GitLab's data from {}: backup {} made by gitlab-ce {}, with gitlab-secrets.json and gitlab.rb.",
                        i.host, i.id, i.version
                    );
                }
                for note in &left_out {
                    println!("Not in the archive: {note}.");
                }
                println!("Keep the passphrase apart from the archive: without it the secrets in it cannot be read.");
            }
        }
    }
    exit::OK
}

fn pack(
    g: &GlobalArgs,
    loaded: &Loaded,
    plan: &Plan,
    state: &State,
    state_file: &Path,
    packer: &mut Packer,
) -> Result<Vec<String>, String> {
    // The state names every object we made in GitLab and Vault: encrypted,
    // though it holds no secret values itself.
    packer.add_file(STATE_MEMBER, state_file, true)?;
    let outputs = outputs_dir(g, loaded);
    let mut files = Vec::new();
    if outputs.is_dir() {
        files_under(&outputs, Path::new(""), &mut files).map_err(|e| format!("{}: {e}", outputs.display()))?;
    }
    for rel in &files {
        let name = format!("{OUTPUTS_PREFIX}{}", rel.display());
        packer.add_file(&name, &outputs.join(rel), false)?;
    }
    say(g, format!("state and {} files from {}", files.len(), outputs.display()));
    if loaded.file != Path::new("<stdin>") {
        let name = loaded
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "inventory.yaml".into());
        packer.add_file(&format!("{INVENTORY_PREFIX}{name}"), &loaded.file, false)?;
    }
    let mut left_out = pack_clusters(g, loaded, state, packer)?;
    left_out.extend(pack_gitlab(g, loaded, plan, state, packer)?);
    let Some((target, _)) = vault_of(loaded, plan) else {
        return Ok(left_out);
    };
    let Some((_, root)) = credentials(&outputs.join("vault")) else {
        say(
            g,
            format!(
                "Vault at {} was not initialised by this installer (no root token in the outputs): its data is not in the backup",
                target.url
            ),
        );
        return Ok(left_out);
    };
    let ca = vault_ca(&target, state, Path::to_path_buf)?;
    let vault = client(&target, ca.as_deref(), loaded)?;
    say(g, format!("taking a raft snapshot of {}", target.url));
    let rt = runtime().map_err(|_| "cannot start the async runtime".to_string())?;
    packer
        .add(SNAPSHOT_MEMBER, true, 0o600, |w| {
            let mut w = w;
            rt.block_on(vault.snapshot(&root, &mut w)).map(|_| ())
        })
        .map_err(|e| format!("{e}\nhint: the snapshot needs Vault unsealed and raft storage; `apply` unseals it"))?;
    Ok(left_out)
}

/// SSH connections for backup and restore, as `apply` makes them.
fn connector(g: &GlobalArgs, loaded: &Loaded) -> Connector {
    Connector::new(
        std::sync::Arc::new(super::apply::ssh_pool(g, loaded)),
        absolute(&loaded.base_dir),
    )
}

/// Each installed cluster's etcd snapshot, encrypted (it holds the
/// cluster's Secrets); returns what could not be backed up, and why.
fn pack_clusters(g: &GlobalArgs, loaded: &Loaded, state: &State, packer: &mut Packer) -> Result<Vec<String>, String> {
    let (stores, left_out) = cluster_data::datastores(loaded, state);
    for note in &left_out {
        say(g, format!("not backed up: {note}"));
    }
    if stores.is_empty() {
        return Ok(left_out);
    }
    let rt = runtime().map_err(|_| "cannot start the async runtime".to_string())?;
    let connector = connector(g, loaded);
    let name = format!(
        "nautes-{}p{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        std::process::id()
    );
    let mut result = Ok(());
    for ds in &stores {
        say(
            g,
            format!("taking an etcd snapshot of cluster {} ({})", ds.cluster, ds.title()),
        );
        result = packer.add(&ds.member_path(), true, 0o600, |w| {
            let from = rt.block_on(cluster_data::snapshot(&connector, ds, &name, w))?;
            say(g, format!("  from {from}"));
            Ok(())
        });
        if result.is_err() {
            break;
        }
    }
    rt.block_on(connector.close_all());
    result.map(|()| left_out)
}

/// GitLab's data, for a GitLab the plan places on a host and the state
/// records installed: the tar `gitlab-backup create` makes (removed from
/// the host once fetched, whatever happened), gitlab-secrets.json and
/// gitlab.rb, all encrypted (the tar holds the database), and the plain
/// record of which backup it is and which GitLab made it. Returns what
/// could not be backed up.
fn pack_gitlab(
    g: &GlobalArgs,
    loaded: &Loaded,
    plan: &Plan,
    state: &State,
    packer: &mut Packer,
) -> Result<Option<String>, String> {
    if !gitlab_data::placed_on_host(plan) {
        return Ok(None);
    }
    let Some(target) = gitlab_data::target(plan, state) else {
        let note = format!(
            "GitLab on its host is not installed yet (the state has no finished `{}` step), so its data is not in this archive",
            crate::components::service_hosts::GITLAB_STEP_ID
        );
        say(g, format!("not backed up: {note}"));
        return Ok(Some(note));
    };
    let rt = runtime().map_err(|_| "cannot start the async runtime".to_string())?;
    let connector = connector(g, loaded);
    let mut pack = || -> Result<(), String> {
        say(
            g,
            format!("gitlab-backup create on {} (GitLab keeps running)", target.host.name),
        );
        let host = rt.block_on(gitlab_data::connect(&connector, &target))?;
        let made = rt.block_on(gitlab_data::create(&host))?;
        let fetched = packer.add(gitlab_data::TAR_MEMBER, true, 0o600, |w| {
            rt.block_on(host.download(&made.remote, w))
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        if let Err(e) = rt.block_on(gitlab_data::remove(&host, &made.remote)) {
            say(g, format!("warning: {e}"));
        }
        fetched?;
        for (member, bytes) in [
            (gitlab_data::SECRETS_MEMBER, &made.secrets),
            (gitlab_data::RB_MEMBER, &made.rb),
        ] {
            packer.add(member, true, 0o600, |w| w.write_all(bytes).map_err(|e| e.to_string()))?;
        }
        let info = serde_json::to_vec_pretty(&made.info).map_err(|e| e.to_string())?;
        packer.add(gitlab_data::INFO_MEMBER, false, 0o644, |w| {
            w.write_all(&info).map_err(|e| e.to_string())
        })?;
        say(
            g,
            format!("  backup {} made by gitlab-ce {}", made.info.id, made.info.version),
        );
        Ok(())
    };
    let result = pack();
    rt.block_on(connector.close_all());
    result.map(|()| None).map_err(|e| format!("GitLab's backup: {e}"))
}

/// The outcome of reading and decrypting an archive into a staging dir.
struct Unpacked {
    manifest: Manifest,
    /// Member path -> its plain content on disk.
    files: BTreeMap<String, PathBuf>,
}

fn unpack(archive_path: &Path, staging: &Path, passphrase: &Secret) -> Result<Unpacked, Vec<String>> {
    let f =
        std::fs::File::open(archive_path).map_err(|e| vec![format!("cannot open {}: {e}", archive_path.display())])?;
    let raw = staging.join("raw");
    let (manifest, _) = archive::read_archive(std::io::BufReader::new(f), &raw)?;
    if manifest.member(STATE_MEMBER).is_none() {
        return Err(vec![format!(
            "the archive holds no {STATE_MEMBER}: not one `backup` wrote"
        )]);
    }
    let keys = manifest.kdf.derive(passphrase).map_err(|e| vec![e])?;
    if !manifest.authentic(&keys) {
        return Err(vec![
            "the passphrase is not the one this archive was made with (or its manifest was altered)".into(),
        ]);
    }
    let plain = staging.join("plain");
    let mut files = BTreeMap::new();
    for m in &manifest.members {
        let stored = raw.join(&m.path);
        if !m.encrypted {
            files.insert(m.path.clone(), stored);
            continue;
        }
        let target = plain.join(&m.path);
        if let Some(p) = target.parent() {
            std::fs::create_dir_all(p).map_err(|e| vec![format!("{}: {e}", p.display())])?;
        }
        let input = std::fs::File::open(&stored).map_err(|e| vec![format!("{}: {e}", stored.display())])?;
        let out = archive::private_file(&target).map_err(|e| vec![format!("{}: {e}", target.display())])?;
        let mut out = std::io::BufWriter::new(out);
        archive::decrypt(&keys, &m.path, std::io::BufReader::new(input), m.size, &mut out).map_err(|e| vec![e])?;
        std::io::Write::flush(&mut out).map_err(|e| vec![format!("{}: {e}", target.display())])?;
        files.insert(m.path.clone(), target);
    }
    Ok(Unpacked { manifest, files })
}

pub fn restore(
    g: &GlobalArgs,
    archive_path: &Path,
    file: &Path,
    pass: &PassphraseArg,
    force: bool,
    clusters: bool,
    gitlab: bool,
) -> u8 {
    let started = std::time::Instant::now();
    let passphrase = match passphrase(pass) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if let Err(e) = std::fs::File::open(archive_path) {
        return fail(
            exit::ARCHIVE,
            format!("cannot open the archive {}: {e}", archive_path.display()),
            Some("pass the file `nautes-install backup` wrote with --from"),
        );
    }
    let _lock = match lock(g, "restore") {
        Ok(l) => l,
        Err(code) => return code,
    };
    let state_file = state_path(&g.workdir);
    match State::load(&state_file) {
        Ok(s) if !s.steps.is_empty() && !force => {
            return fail(
                exit::USAGE,
                format!(
                    "{} already records {} steps; restoring would replace it",
                    state_file.display(),
                    s.steps.len()
                ),
                Some("pass --force to replace it, or restore into another --workdir"),
            )
        }
        Ok(_) => {}
        Err(e) if force => say(g, format!("replacing an unreadable state ({e})")),
        Err(e) => {
            return fail(
                exit::STATE_ERROR,
                e.to_string(),
                Some("pass --force to replace it with the archived one"),
            )
        }
    }
    let staging = match Staging::new(g.workdir.join(format!(".restore-{}", std::process::id()))) {
        Ok(s) => s,
        Err(e) => {
            return fail(
                exit::STATE_ERROR,
                format!("cannot stage in {}: {e}", g.workdir.display()),
                None,
            )
        }
    };
    say(g, format!("checking {}", archive_path.display()));
    let unpacked = match unpack(archive_path, &staging.0, &passphrase) {
        Ok(u) => u,
        Err(problems) => {
            for p in &problems {
                eprintln!("error: {p}");
            }
            eprintln!("nothing was restored");
            return exit::ARCHIVE;
        }
    };
    // With no inventory where -i points, the archived one is put there.
    let mut restored: Vec<String> = Vec::new();
    if !file.exists() && file != Path::new("-") {
        if let Some((path, staged)) = unpacked.files.iter().find(|(p, _)| p.starts_with(INVENTORY_PREFIX)) {
            let mode = unpacked.manifest.member(path).map(|m| m.mode).unwrap_or(0o600);
            if let Err(e) = copy_atomic(staged, file, mode) {
                return fail(exit::STEP_FAILED, format!("cannot write {}: {e}", file.display()), None);
            }
            restored.push(format!("the inventory, to {}", file.display()));
        }
    }
    let (loaded, plan) = match load_and_plan(g, file) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let outputs = outputs_dir(g, &loaded);
    // Known before any cluster is touched: a GitLab restore that cannot be
    // done stops here.
    let gitlab_restore = match gitlab_to_restore(g, &plan, &unpacked, gitlab) {
        Ok(x) => x,
        Err(e) => {
            return fail(
                exit::STEP_FAILED,
                format!("restoring GitLab: {e}"),
                Some("nothing was changed yet; fix that and run restore again"),
            )
        }
    };
    match restore_clusters(g, &loaded, &unpacked, clusters) {
        Ok(done) => restored.extend(done),
        Err(e) => {
            return fail(
                exit::STEP_FAILED,
                format!("restoring the clusters' etcd: {e}"),
                Some("nothing on this machine was changed yet; fix that and run restore again"),
            )
        }
    }
    if let Some((target, info)) = &gitlab_restore {
        match restore_gitlab(g, &loaded, target, info, &unpacked) {
            Ok(done) => restored.push(done),
            Err(e) => {
                return fail(
                    exit::STEP_FAILED,
                    format!("restoring GitLab: {e}"),
                    Some("the state and outputs on this machine were not changed; fix that and run restore again"),
                )
            }
        }
    }
    if unpacked.files.contains_key(SNAPSHOT_MEMBER) {
        match restore_vault(g, &loaded, &plan, &unpacked, &outputs) {
            Ok(url) => restored.push(format!("OpenBao's data at {url} (unsealed)")),
            Err(e) => {
                return fail(
                    exit::STEP_FAILED,
                    format!("restoring OpenBao: {e}"),
                    Some("nothing on this machine was changed yet; fix that and run restore again"),
                )
            }
        }
    }
    let mut outputs_restored = 0;
    for m in &unpacked.manifest.members {
        let staged = &unpacked.files[&m.path];
        let dest = if m.path == STATE_MEMBER {
            state_file.clone()
        } else if let Some(rel) = m.path.strip_prefix(OUTPUTS_PREFIX) {
            outputs_restored += 1;
            outputs.join(rel)
        } else {
            continue;
        };
        if let Err(e) = copy_atomic(staged, &dest, m.mode) {
            return fail(exit::STEP_FAILED, format!("cannot write {}: {e}", dest.display()), None);
        }
    }
    restored.push(format!("the state, to {}", state_file.display()));
    restored.push(format!("{outputs_restored} files of outputs, to {}", outputs.display()));
    let next = format!("nautes-install apply -i {}", file.display());
    match g.output {
        Output::Json => println!(
            "{}",
            json!({
                "event": "restore_done",
                "archive": archive_path,
                "created": unpacked.manifest.created,
                "restored": restored,
                "next": next,
                "seconds": started.elapsed().as_secs_f64(),
            })
        ),
        Output::Text => {
            if !g.quiet {
                println!(
                    "Restored from {} (made {}):",
                    archive_path.display(),
                    unpacked.manifest.created
                );
                for r in &restored {
                    println!("  {r}");
                }
                println!("Next: run `{next}` to converge everything else on the restored state.");
            }
        }
    }
    exit::OK
}

/// Put back each cluster's etcd snapshot the archive holds, when asked
/// (`--clusters`): it rolls a live cluster back. Unasked, say what is there.
fn restore_clusters(g: &GlobalArgs, loaded: &Loaded, u: &Unpacked, asked: bool) -> Result<Vec<String>, String> {
    let archived: Vec<&String> = u.files.keys().filter(|p| p.starts_with(cluster_data::PREFIX)).collect();
    if archived.is_empty() {
        return Ok(Vec::new());
    }
    let archived_state = State::load(&u.files[STATE_MEMBER]).map_err(|e| e.to_string())?;
    let (stores, _) = cluster_data::datastores(loaded, &archived_state);
    let mut unknown: Vec<&str> = archived
        .iter()
        .filter(|p| !stores.iter().any(|ds| ds.member_path() == ***p))
        .map(|p| p.as_str())
        .collect();
    unknown.sort();
    if !unknown.is_empty() {
        return Err(format!(
            "the archive holds {} but the inventory has no such installed K3s (embedded etcd) or Kubespray cluster",
            unknown.join(", ")
        ));
    }
    let names: Vec<&str> = stores.iter().map(|ds| ds.cluster.as_str()).collect();
    if !asked {
        say(
            g,
            format!(
                "the archive holds etcd snapshots of {}: not restored (pass --clusters to roll those clusters back to them)",
                names.join(", ")
            ),
        );
        return Ok(Vec::new());
    }
    let rt = runtime().map_err(|_| "cannot start the async runtime".to_string())?;
    let connector = connector(g, loaded);
    let stamp = archive_name("r")
        .trim_start_matches("r-")
        .trim_end_matches(".tar.gz")
        .to_string();
    let mut done = Vec::new();
    let mut result = Ok(());
    for ds in &stores {
        say(g, format!("restoring cluster {} ({})", ds.cluster, ds.title()));
        let local = &u.files[&ds.member_path()];
        let said = |line: String| say(g, format!("  {line}"));
        result = rt
            .block_on(cluster_data::restore(&connector, ds, local, &stamp, &said))
            .map_err(|e| format!("cluster `{}`: {e}", ds.cluster));
        if result.is_err() {
            break;
        }
        done.push(format!("the etcd of cluster {} ({})", ds.cluster, ds.title()));
    }
    rt.block_on(connector.close_all());
    result.map(|()| done)
}

/// GitLab's backup in the archive, and where it goes, when asked
/// (`--gitlab`): it rolls a live GitLab back. Unasked, say what is there.
fn gitlab_to_restore(
    g: &GlobalArgs,
    plan: &Plan,
    u: &Unpacked,
    asked: bool,
) -> Result<Option<(gitlab_data::Target, gitlab_data::Info)>, String> {
    let Some(info_file) = u.files.get(gitlab_data::INFO_MEMBER) else {
        if asked {
            say(g, "--gitlab: the archive holds no GitLab backup; GitLab is left alone");
        }
        return Ok(None);
    };
    let info: gitlab_data::Info = std::fs::read(info_file)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| format!("{}: {e}", gitlab_data::INFO_MEMBER))?;
    for member in [
        gitlab_data::TAR_MEMBER,
        gitlab_data::SECRETS_MEMBER,
        gitlab_data::RB_MEMBER,
    ] {
        if !u.files.contains_key(member) {
            return Err(format!(
                "the archive holds {} but not {member}",
                gitlab_data::INFO_MEMBER
            ));
        }
    }
    if !asked {
        say(
            g,
            format!(
                "the archive holds GitLab's backup {} (gitlab-ce {}, from {}): not restored (pass --gitlab to roll GitLab back to it)",
                info.id, info.version, info.host
            ),
        );
        return Ok(None);
    }
    let archived_state = State::load(&u.files[STATE_MEMBER]).map_err(|e| e.to_string())?;
    let target = gitlab_data::target(plan, &archived_state).ok_or_else(|| {
        "the archive holds GitLab's backup but the inventory places no GitLab on a host (components.gitlab.placement: host)"
            .to_string()
    })?;
    Ok(Some((target, info)))
}

fn restore_gitlab(
    g: &GlobalArgs,
    loaded: &Loaded,
    target: &gitlab_data::Target,
    info: &gitlab_data::Info,
    u: &Unpacked,
) -> Result<String, String> {
    say(
        g,
        format!("restoring GitLab on {} from backup {}", target.host.name, info.id),
    );
    let rt = runtime().map_err(|_| "cannot start the async runtime".to_string())?;
    let connector = connector(g, loaded);
    let wait = super::limits(&loaded.inventory.settings.timeouts).rollout;
    let staged = gitlab_data::Staged {
        info,
        tar: &u.files[gitlab_data::TAR_MEMBER],
        secrets: &u.files[gitlab_data::SECRETS_MEMBER],
        rb: &u.files[gitlab_data::RB_MEMBER],
    };
    let said = |line: String| say(g, format!("  {line}"));
    let result = rt.block_on(async {
        let host = gitlab_data::connect(&connector, target).await?;
        gitlab_data::restore(&host, target, &staged, wait, &said).await
    });
    rt.block_on(connector.close_all());
    result.map(|()| {
        format!(
            "GitLab's data on {} (backup {}, gitlab-ce {})",
            target.host.name, info.id, info.version
        )
    })
}

/// Copy a staged file into place atomically with `mode`, creating its
/// directory private if missing.
fn copy_atomic(from: &Path, to: &Path, mode: u32) -> std::io::Result<()> {
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    crate::util::write_atomic_with(to, mode, |w| {
        let mut f = std::fs::File::open(from)?;
        std::io::copy(&mut f, w).map(|_| ())
    })?;
    // The umask may have narrowed the mode at create; set it as archived.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
}

/// Put OpenBao's raft snapshot back. An uninitialised OpenBao (new or
/// wiped storage) is first initialised with throw-away keys, only so the
/// snapshot can be sent: it then seals itself, and opens with the archived
/// keys. One that is initialised must know the archived root token, so a
/// Vault with other data is never overwritten by mistake.
fn restore_vault(g: &GlobalArgs, loaded: &Loaded, plan: &Plan, u: &Unpacked, outputs: &Path) -> Result<String, String> {
    let (target, spec) =
        vault_of(loaded, plan).ok_or("the archive holds an OpenBao snapshot but the inventory configures no Vault")?;
    // Credentials and CA come from the archive; nothing local is read.
    let relocate = |p: &Path| -> PathBuf {
        let absolute = std::path::absolute(outputs).unwrap_or_else(|_| outputs.to_path_buf());
        match p.strip_prefix(outputs).or_else(|_| p.strip_prefix(&absolute)) {
            Ok(rel) => u
                .files
                .get(&format!("{OUTPUTS_PREFIX}{}", rel.display()))
                .cloned()
                .unwrap_or_else(|| p.to_path_buf()),
            Err(_) => p.to_path_buf(),
        }
    };
    let archived_state = State::load(&u.files[STATE_MEMBER]).map_err(|e| e.to_string())?;
    let ca = vault_ca(&target, &archived_state, relocate)?;
    let member = |name: &str| u.files.get(&format!("{OUTPUTS_PREFIX}vault/{name}")).cloned();
    let read = |name: &str| {
        member(name)
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| Secret::new(t.trim()))
    };
    let root = read("root-token").ok_or("the archive has no Vault root token (outputs/vault/root-token)")?;
    let keys: Vec<Secret> = (1..)
        .map(|i| read(&format!("unseal-key-{i}")))
        .take_while(Option::is_some)
        .flatten()
        .collect();
    let vault = client(&target, ca.as_deref(), loaded)?;
    let wait = super::limits(&loaded.inventory.settings.timeouts).rollout;
    let rt = runtime().map_err(|_| "cannot start the async runtime".to_string())?;
    rt.block_on(async {
        let status = vault.seal_status().await?;
        let (token, from_scratch) = if !status.initialized {
            say(g, format!("{} is not initialised: initialising it with throw-away keys to restore into", target.url));
            let shares = (keys.len() as u32).max(spec.key_shares).max(2);
            let threshold = spec.key_threshold.clamp(1, shares);
            let init = vault.init(shares, threshold, &[]).await?;
            unseal(&vault, &init.keys, "the throw-away keys").await?;
            wait_active(&vault, wait).await?;
            (init.root_token, true)
        } else {
            if status.sealed {
                unseal(&vault, &keys, "the archived unseal keys").await.map_err(|e| {
                    format!("{e}: it is not the OpenBao this archive was made from; wipe its storage (it then starts uninitialised) and run restore again")
                })?;
                wait_active(&vault, wait).await?;
            }
            if vault.read("auth/token/lookup-self", &root).await.is_err() {
                return Err(format!(
                    "{} does not know the archived root token: it holds other data, which a restore would replace; \
                     wipe its storage (it then starts uninitialised) and run restore again",
                    target.url
                ));
            }
            (root.clone(), false)
        };
        let snapshot = &u.files[SNAPSHOT_MEMBER];
        let file = tokio::fs::File::open(snapshot).await.map_err(|e| format!("{}: {e}", snapshot.display()))?;
        say(g, format!("sending the raft snapshot to {}", target.url));
        vault.restore_snapshot(&token, file).await?;
        if from_scratch {
            // The snapshot brings the archived keyring: OpenBao seals itself
            // moments later and opens only with the archived keys.
            let deadline = tokio::time::Instant::now() + wait;
            while !vault.seal_status().await.map(|s| s.sealed).unwrap_or(false) {
                if tokio::time::Instant::now() > deadline {
                    return Err(format!("{} did not seal after the restore within {wait:?}", target.url));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if vault.seal_status().await?.sealed {
            say(g, "unsealing with the archived keys");
            unseal(&vault, &keys, "the archived unseal keys").await?;
        }
        wait_active(&vault, wait).await?;
        vault
            .read("auth/token/lookup-self", &root)
            .await
            .map_err(|e| format!("the archived root token does not work after the restore: {e}"))?;
        Ok(target.url.clone())
    })
}

async fn unseal(vault: &Vault, keys: &[Secret], which: &str) -> Result<(), String> {
    for key in keys {
        if !vault.unseal(key).await?.sealed {
            return Ok(());
        }
    }
    Err(format!("{} stays sealed with {which} ({})", vault.url(), keys.len()))
}

/// After an unseal, raft must elect a leader before anything but status is served.
async fn wait_active(vault: &Vault, limit: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match vault.leader().await {
            Ok(l) if l.has_active() => return Ok(()),
            _ if tokio::time::Instant::now() > deadline => {
                return Err(format!("{} has no active node after {limit:?}", vault.url()))
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
