//! GitLab's data in `backup` and `restore --gitlab`, for a GitLab the
//! installer placed on a host (Omnibus over SSH): the real binary against a
//! real sshd test host on which our playbook installed the gitlab-ce .deb
//! of the stand-ins (tests/support/service_hosts_standin/gitlab-ctl and
//! gitlab-backup, built and installed as in `service_hosts`). The
//! gitlab-backup stand-in keeps GitLab's preconditions (restore refused
//! while puma or sidekiq run, for another GitLab version, for a tar not
//! owned by git, without gitlab-secrets.json) and both record every call,
//! so the tests assert the exact commands.

use super::service_hosts::{env, ready, Env, G, GITLAB, GITLAB_NEXT};
use crate::support::{archive, cli};

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use cli::{code, stderr, stdout};
use nautes_install::archive::Manifest;
use nautes_install::secret::Secret;

const PASSPHRASE: &str = "gitlab backup passphrase";
/// gitlab.rb's gitlab_rails['backup_path'] in these tests (not the default).
const BACKUPS: &str = "/var/opt/gitlab/nautes-backups";
const DB: &str = "/var/opt/gitlab/postgresql/standin-db.json";
const REPO_HEAD: &str = "/var/opt/gitlab/git-data/repositories/tenant/app.git/HEAD";
const SECRETS: &str = "/etc/gitlab/gitlab-secrets.json";
const RB: &str = "/etc/gitlab/gitlab.rb";
const TAR_MEMBER: &str = "gitlab/gitlab_backup.tar";
const MEMBERS: [&str; 4] = [
    TAR_MEMBER,
    "gitlab/gitlab-secrets.json",
    "gitlab/gitlab.rb",
    "gitlab/backup.json",
];

fn write_inventory(e: &Env, version: Option<&str>) {
    let version = version.map(|v| format!("    version: {v}\n")).unwrap_or_default();
    e.write_inventory(
        "systemd",
        "10s",
        &format!(
            "  gitlab:\n    placement: host\n    host: gitlab-1\n{version}    values:\n      gitlabRb: |\n        gitlab_rails['backup_path'] = '{BACKUPS}'\n"
        ),
        "",
    );
}

/// GitLab installed on gitlab-1 by `apply`, holding some data.
fn installed() -> Env {
    let e = env();
    write_inventory(&e, None);
    e.apply_ok(&["gitlab/host"]);
    put(
        &e,
        DB,
        r#"{"projects": ["tenant/app"], "probe": "data-before-the-backup"}"#,
    );
    put(&e, REPO_HEAD, "ref: refs/heads/before-the-backup\n");
    e
}

fn put(e: &Env, path: &str, content: &str) {
    let p = e.hosts.host_path(G, path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn passphrase_file(e: &Env) -> PathBuf {
    let p = e.s.path().join("passphrase");
    std::fs::write(&p, format!("{PASSPHRASE}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn backup(e: &Env, out: &Path) -> Output {
    e.command(&["backup", "-i", "inventory.yaml", "--passphrase-file"])
        .arg(passphrase_file(e))
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

fn restore(e: &Env, archive: &Path, extra: &[&str]) -> Output {
    e.command(&["restore", "-i", "inventory.yaml", "--force", "--passphrase-file"])
        .arg(passphrase_file(e))
        .arg("--from")
        .arg(archive)
        .args(extra)
        .output()
        .unwrap()
}

fn backup_calls(e: &Env) -> Vec<String> {
    std::fs::read_to_string(e.hosts.host_path(G, "/opt/nautes/standin/gitlab-backup.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn backups_on_host(e: &Env) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(e.hosts.host_path(G, BACKUPS))
        .unwrap()
        .flatten()
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Each member's bytes as stored in the archive.
fn stored(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let tar_bytes = archive::gunzip(bytes);
    let mut a = tar::Archive::new(tar_bytes.as_slice());
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut content = Vec::new();
            e.read_to_end(&mut content).unwrap();
            (path, content)
        })
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    nautes_install::util::hex(&sha2::Sha256::digest(bytes))
}

/// The gitlab-secrets.json values and the root password: none may show
/// anywhere but on the host and (encrypted) in the archive.
fn secrets_of(e: &Env, secrets_json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(secrets_json).unwrap();
    let mut out: Vec<String> = v["gitlab_rails"]
        .as_object()
        .unwrap()
        .values()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert_eq!(out.len(), 2, "{secrets_json}");
    let pw = std::fs::read_to_string(e.s.workdir().join("outputs/gitlab/root-password")).unwrap();
    out.push(pw.trim().to_string());
    out
}

/// Nothing the installer printed or left in its workdir (state, logs)
/// holds a secret.
fn assert_no_secret(e: &Env, secrets: &[String], printed: &[&Output]) {
    let mut texts: Vec<(String, String)> = printed
        .iter()
        .enumerate()
        .map(|(i, o)| (format!("output {i}"), format!("{}{}", stdout(o), stderr(o))))
        .collect();
    texts.push((
        "state.json".into(),
        std::fs::read_to_string(e.s.workdir().join("state.json")).unwrap(),
    ));
    let logs = e.s.workdir().join("logs");
    for entry in std::fs::read_dir(&logs).unwrap().flatten() {
        texts.push((
            entry.path().display().to_string(),
            std::fs::read_to_string(entry.path()).unwrap(),
        ));
    }
    for (what, text) in &texts {
        for s in secrets {
            assert!(!text.contains(s.as_str()), "a secret is in {what}");
        }
    }
}

#[test]
fn gitlab_is_backed_up_while_it_runs_and_restored_in_gitlabs_own_order() {
    if !ready() {
        return;
    }
    let e = installed();
    let secrets_json = e.file(G, SECRETS);
    let rb = e.file(G, RB);
    let secrets = secrets_of(&e, &secrets_json);
    let ctl_before = e.gitlab_ctl_calls();
    let nginx = e.file(G, "/opt/nautes/standin/gitlab-nginx.pid");

    let path = e.s.path().join("backup.tar.gz");
    let made = backup(&e, &path);
    assert_eq!(code(&made), 0, "{}", stderr(&made));
    // One create with the copy strategy; GitLab neither stopped, restarted
    // nor reconfigured; the tar made for the archive gone from the host.
    assert_eq!(backup_calls(&e), ["create STRATEGY=copy"]);
    assert_eq!(e.gitlab_ctl_calls(), ctl_before);
    assert_eq!(e.file(G, "/opt/nautes/standin/gitlab-nginx.pid"), nginx);
    assert_eq!(backups_on_host(&e), Vec::<String>::new());

    // The members, each with the sha256 of its stored bytes; the tar,
    // gitlab-secrets.json and gitlab.rb encrypted, and decrypting to what
    // the host held; the record names the version that made it.
    let bytes = std::fs::read(&path).unwrap();
    let members = stored(&bytes);
    let manifest: Manifest = serde_json::from_slice(&members["manifest.json"]).unwrap();
    let keys = manifest.kdf.derive(&Secret::new(PASSPHRASE)).unwrap();
    let mut plain = BTreeMap::new();
    for name in MEMBERS {
        let m = manifest
            .member(name)
            .unwrap_or_else(|| panic!("no {name} in the manifest"));
        let content = &members[name];
        assert_eq!(m.sha256, sha256(content), "{name}");
        assert_eq!(m.size, content.len() as u64, "{name}");
        assert_eq!(m.encrypted, name != "gitlab/backup.json", "{name}");
        let mut out = Vec::new();
        if m.encrypted {
            nautes_install::archive::decrypt(&keys, name, content.as_slice(), m.size, &mut out).unwrap();
        } else {
            out = content.clone();
        }
        plain.insert(name, out);
    }
    assert_eq!(
        String::from_utf8_lossy(&plain["gitlab/gitlab-secrets.json"]),
        secrets_json
    );
    assert_eq!(String::from_utf8_lossy(&plain["gitlab/gitlab.rb"]), rb);
    let info: serde_json::Value = serde_json::from_slice(&plain["gitlab/backup.json"]).unwrap();
    let id = info["id"].as_str().unwrap().to_string();
    assert_eq!(info["host"], "gitlab-1");
    assert_eq!(info["version"], GITLAB);
    assert!(id.ends_with("_15.10.8"), "{id}");
    let mut tar = tar::Archive::new(plain[TAR_MEMBER].as_slice());
    let mut inside = BTreeMap::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut text = String::new();
        let _ = entry.read_to_string(&mut text);
        inside.insert(entry.path().unwrap().to_string_lossy().into_owned(), text);
    }
    assert!(inside["backup_information.yml"].contains(":gitlab_version: 15.10.8"));
    assert!(inside["db/database.json"].contains("data-before-the-backup"));
    assert!(stdout(&made).contains(&format!(
        "GitLab's data from gitlab-1: backup {id} made by gitlab-ce {GITLAB}"
    )));
    let tar_bytes = archive::gunzip(&bytes);
    for s in secrets.iter().map(String::as_str).chain(["data-before-the-backup"]) {
        assert!(
            !archive::contains(&bytes, s) && !archive::contains(&tar_bytes, s),
            "readable in the archive: a secret or GitLab's data"
        );
    }

    // GitLab moves on and loses its secrets file.
    put(&e, DB, r#"{"projects": [], "probe": "data-after-the-backup"}"#);
    put(&e, REPO_HEAD, "ref: refs/heads/after-the-backup\n");
    std::fs::remove_file(e.hosts.host_path(G, SECRETS)).unwrap();
    let untouched = |e: &Env, ctl: usize, calls: usize| {
        assert_eq!(e.gitlab_ctl_calls().len(), ctl);
        assert_eq!(backup_calls(e).len(), calls);
        assert!(e.file(G, DB).contains("data-after-the-backup"));
        assert!(!e.hosts.host_path(G, SECRETS).exists());
    };
    let (ctl, calls) = (e.gitlab_ctl_calls().len(), backup_calls(&e).len());

    // A flipped byte in the tar: refused naming it, GitLab untouched.
    let damaged = e.s.path().join("damaged.tar.gz");
    std::fs::write(&damaged, archive::with_member_byte_flipped(&bytes, TAR_MEMBER)).unwrap();
    let out = restore(&e, &damaged, &["--gitlab"]);
    assert_eq!(code(&out), 7, "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("`{TAR_MEMBER}`")), "{}", stderr(&out));
    untouched(&e, ctl, calls);

    // Unasked, restore says GitLab's backup is there and leaves GitLab be.
    let unasked = restore(&e, &path, &[]);
    assert_eq!(code(&unasked), 0, "{}", stderr(&unasked));
    assert!(
        stderr(&unasked).contains(&format!("GitLab's backup {id}")) && stderr(&unasked).contains("--gitlab"),
        "{}",
        stderr(&unasked)
    );
    untouched(&e, ctl, calls);

    let done = restore(&e, &path, &["--gitlab"]);
    assert_eq!(code(&done), 0, "{}\n{}", stdout(&done), stderr(&done));
    assert!(
        stdout(&done).contains(&format!("GitLab's data on gitlab-1 (backup {id}, gitlab-ce {GITLAB})")),
        "{}",
        stdout(&done)
    );
    // GitLab's documented order, exactly.
    assert_eq!(
        e.gitlab_ctl_calls()[ctl..],
        ["reconfigure", "stop puma", "stop sidekiq", "reconfigure", "restart"]
    );
    assert_eq!(
        backup_calls(&e)[calls..],
        [format!("GITLAB_ASSUME_YES=1 restore BACKUP={id}")]
    );
    assert!(e.file(G, DB).contains("data-before-the-backup"));
    assert_eq!(e.file(G, REPO_HEAD), "ref: refs/heads/before-the-backup\n");
    assert_eq!(e.file(G, SECRETS), secrets_json);
    assert_eq!(e.mode(G, SECRETS), (0o600, 0));
    assert_eq!(e.file(G, RB), rb);
    assert_eq!(e.mode(G, RB), (0o600, 0));
    // Every service back up (GitLab answered its readiness check), and the
    // tar sent for the restore removed.
    assert_eq!(e.file(G, "/var/opt/gitlab/standin/down"), "");
    assert_eq!(backups_on_host(&e), Vec::<String>::new());
    assert_no_secret(&e, &secrets, &[&made, &unasked, &done]);

    // The normal apply converges on the restored state without touching GitLab.
    let ctl = e.gitlab_ctl_calls().len();
    e.apply_ok(&["gitlab/host"]);
    assert_eq!(e.gitlab_ctl_calls()[ctl..], Vec::<String>::new());
}

#[test]
fn a_gitlab_of_another_version_is_refused_before_its_host_is_touched() {
    if !ready() {
        return;
    }
    let e = installed();
    let path = e.s.path().join("backup.tar.gz");
    let made = backup(&e, &path);
    assert_eq!(code(&made), 0, "{}", stderr(&made));

    // GitLab is upgraded after the backup.
    write_inventory(&e, Some(GITLAB_NEXT));
    e.apply_ok(&["gitlab/host"]);
    put(&e, DB, r#"{"probe": "data-of-the-upgraded-gitlab"}"#);
    let before = (
        e.gitlab_ctl_calls(),
        backup_calls(&e),
        e.file(G, SECRETS),
        e.file(G, RB),
        backups_on_host(&e),
        std::fs::read(e.s.workdir().join("state.json")).unwrap(),
    );

    let out = restore(&e, &path, &["--gitlab"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("gitlab-1 has gitlab-ce {GITLAB_NEXT} installed"))
            && err.contains(&format!("made by gitlab-ce {GITLAB}")),
        "{err}"
    );
    let after = (
        e.gitlab_ctl_calls(),
        backup_calls(&e),
        e.file(G, SECRETS),
        e.file(G, RB),
        backups_on_host(&e),
        std::fs::read(e.s.workdir().join("state.json")).unwrap(),
    );
    assert!(before == after, "the host or the state changed");
    assert!(e.file(G, DB).contains("data-of-the-upgraded-gitlab"));
    let secrets = secrets_of(&e, &e.file(G, SECRETS));
    assert_no_secret(&e, &secrets, &[&made, &out]);
}
