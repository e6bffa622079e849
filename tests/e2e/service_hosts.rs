//! Vault and GitLab placed on hosts of their own, end to end: the real
//! binary runs our playbooks with the real `ansible-playbook` over real SSH
//! against the sshd test hosts, from a sealed air-gap bundle. Vault, GitLab
//! and systemd cannot be installed here, so the hosts get stand-ins
//! (tests/support/service_hosts_standin/): a `systemctl` that records its
//! calls and runs units, the Vault binary inside the release zip, and a
//! gitlab-ce .deb (built here with dpkg-deb, installed by the real dpkg into
//! the host's private /var/lib/dpkg) holding a `gitlab-ctl`. OpenBao
//! (`distribution: openbao`) is the real thing: the `bao` binary CI installs,
//! inside its release tarball, run by the same `systemctl` stand-in.

use crate::support::{ca, cli, hosts, http, vault};

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use cli::{code, stderr, stdout, Scratch};
use hosts::TestHosts;
use serde_json::json;

const VAULT: &str = "1.10.4";
pub(super) const GITLAB: &str = "15.10.8-ce.0";
pub(super) const GITLAB_NEXT: &str = "16.3.0-ce.0";
const OPENBAO: &str = "2.7.2";
/// What the services write besides the harness's usual private directories.
const SERVICE_DIRS: &[(&str, &str)] = &[
    ("/etc/vault.d", "etc-vault.d"),
    ("/opt/vault", "opt-vault"),
    ("/etc/openbao", "etc-openbao"),
    ("/opt/openbao", "opt-openbao"),
    ("/etc/gitlab", "etc-gitlab"),
    ("/opt/gitlab", "opt-gitlab"),
    ("/var/opt/gitlab", "var-opt-gitlab"),
    ("/var/lib/dpkg", "var-lib-dpkg"),
];
const V: usize = 0;
pub(super) const G: usize = 1;

fn standin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support/service_hosts_standin")
        .join(name)
}

pub(super) fn ready() -> bool {
    let ok = Command::new("ansible-playbook")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("ansible-playbook is missing (.ci/install.d/25-ansible.sh installs it)");
        }
        eprintln!("SKIPPED: ansible-playbook missing");
    }
    ok && !hosts::skip_unless_available()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The air-gap bundle: the Vault stand-in inside the release zip, and
/// gitlab-ce .debs holding the gitlab-ctl stand-in, then `bundle seal`.
fn make_bundle(s: &Scratch) {
    let bundle = s.path().join("bundle");
    let vdir = bundle.join("vault").join(VAULT);
    std::fs::create_dir_all(&vdir).unwrap();
    let vault = std::fs::read_to_string(standin("vault"))
        .unwrap()
        .replace("@VERSION@", VAULT);
    let zip = vdir.join(format!("vault_{VAULT}_linux_amd64.zip"));
    run(Command::new("python3").args([
        "-c",
        "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w') as z: z.writestr('vault', sys.argv[2])",
        zip.to_str().unwrap(),
        &vault,
    ]));
    for version in [GITLAB, GITLAB_NEXT] {
        let root = s.path().join(format!("deb-{version}"));
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        std::fs::create_dir_all(root.join("opt/gitlab/bin")).unwrap();
        std::fs::write(
            root.join("DEBIAN/control"),
            format!(
                "Package: gitlab-ce\nVersion: {version}\nArchitecture: amd64\nMaintainer: nautes tests <tests@nautes.invalid>\nDescription: STAND-IN for GitLab CE (tests only)\n"
            ),
        )
        .unwrap();
        for tool in ["gitlab-ctl", "gitlab-backup"] {
            let bin = root.join("opt/gitlab/bin").join(tool);
            std::fs::write(
                &bin,
                std::fs::read_to_string(standin(tool))
                    .unwrap()
                    .replace("@VERSION@", version),
            )
            .unwrap();
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(
            root.join("opt/gitlab/version-manifest.txt"),
            format!("gitlab-ce {}\n", version.split('-').next().unwrap()),
        )
        .unwrap();
        let dir = bundle.join("gitlab").join(version);
        std::fs::create_dir_all(&dir).unwrap();
        run(Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&root)
            .arg(dir.join(format!("gitlab-ce_{version}_amd64.deb"))));
    }
    seal_bundle(s);
}

/// The air-gap bundle for OpenBao: the real `bao` at the root of the release
/// tarball, owned by root and executable, as OpenBao's release packs it.
fn make_openbao_bundle(s: &Scratch, bao: &Path) {
    let dir = s.path().join("bundle/openbao").join(OPENBAO);
    std::fs::create_dir_all(&dir).unwrap();
    let tarball = dir.join(format!("openbao_{OPENBAO}_linux_amd64.tar.gz"));
    // Fast compression: the binary is ~180 MB and only the format matters here.
    run(Command::new("tar")
        .args(["--owner=0", "--group=0", "--mode=0755", "-I", "gzip -1", "-cf"])
        .arg(&tarball)
        .arg("-C")
        .arg(bao.parent().unwrap())
        .arg(bao.file_name().unwrap()));
    seal_bundle(s);
}

fn seal_bundle(s: &Scratch) {
    let bundle = s.path().join("bundle");
    let out = s
        .command(&["bundle", "seal", "--dir", bundle.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

pub(super) struct Env {
    pub(super) hosts: TestHosts,
    pub(super) s: Scratch,
    /// The binary under test, copied: other builds in this tree replace
    /// target/debug/nautes-install, and one test runs it many times.
    bin: PathBuf,
}

impl Drop for Env {
    /// Stand-in services run detached; stop any a failed test left behind.
    fn drop(&mut self) {
        for i in 0..self.hosts.hosts.len() {
            let dir = self.hosts.host_path(i, "/opt/nautes/standin");
            let mut pids = Vec::new();
            for sub in [dir.clone(), dir.join("systemd")] {
                for entry in std::fs::read_dir(&sub).into_iter().flatten().flatten() {
                    if entry.path().extension().is_some_and(|e| e == "pid") {
                        if let Ok(pid) = std::fs::read_to_string(entry.path())
                            .unwrap_or_default()
                            .trim()
                            .parse::<i32>()
                        {
                            pids.push(pid);
                        }
                    }
                }
            }
            // A pid file can outlive its process, and its number may since
            // belong to another test's process (this binary runs the
            // control-plane tests beside it): only a process inside a test
            // host (its own mount namespace, not ours) is one of ours.
            let ours = std::fs::read_link("/proc/self/ns/mnt").ok();
            for pid in pids {
                if std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok() == ours {
                    continue;
                }
                // SAFETY: plain kill(2) of a stand-in this test started.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// Vault and GitLab hosts with their stand-ins and bundle.
pub(super) fn env() -> Env {
    let e = hosts_env(&["vault-1", "gitlab-1"], false);
    make_bundle(&e.s);
    e
}

/// Test hosts with the `systemctl` stand-in, and a scratch directory with a
/// copy of the binary; the caller makes the bundle. `own_ports`: the test
/// runs a real server listening on every address of the one network all
/// test hosts share.
fn hosts_env(names: &[&str], own_ports: bool) -> Env {
    let names: Vec<(String, String)> = names.iter().map(|n| (n.to_string(), n.to_string())).collect();
    let hosts = if own_ports {
        TestHosts::start_named_with_dirs_owning_ports(&names, SERVICE_DIRS)
    } else {
        TestHosts::start_named_with_dirs(&names, SERVICE_DIRS)
    };
    for i in 0..hosts.hosts.len() {
        let bin = hosts.host_path(i, "/usr/local/bin/systemctl");
        std::fs::copy(standin("systemctl"), &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let env = hosts.host_path(i, "/opt/nautes/standin/host.env");
        std::fs::create_dir_all(env.parent().unwrap()).unwrap();
        std::fs::write(env, format!("ADDRESS={}\n", hosts.hosts[i].address)).unwrap();
        // An empty package database: dpkg on the host knows only what we install.
        std::fs::write(hosts.host_path(i, "/var/lib/dpkg/status"), "").unwrap();
    }
    let s = Scratch::new();
    let bin = s.path().join("nautes-install");
    std::fs::copy(env!("CARGO_BIN_EXE_nautes-install"), &bin).unwrap();
    std::fs::write(s.path().join("known_hosts"), hosts.known_hosts()).unwrap();
    Env { hosts, s, bin }
}

impl Env {
    pub(super) fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.current_dir(self.s.path())
            .arg("--workdir")
            .arg(self.s.workdir())
            .args(args)
            .env_remove("NAUTES_WORKDIR")
            .stdin(std::process::Stdio::null());
        c
    }

    /// `waive` replaces the harness's `waive: [systemd]` on every host.
    fn inventory(&self, waive: &str, vault: &str, gitlab: &str, extra_hosts: &str) {
        self.write_inventory(
            waive,
            "10s",
            &format!("  vault:\n    placement: host\n    host: vault-1\n{vault}  gitlab:\n    placement: host\n    host: gitlab-1\n{gitlab}"),
            extra_hosts,
        );
    }

    /// An air-gapped inventory of these hosts with `components`; `rollout`
    /// bounds the wait until a service answers.
    pub(super) fn write_inventory(&self, waive: &str, rollout: &str, components: &str, extra_hosts: &str) {
        let hosts = self.hosts.inventory_hosts().replace(
            "    waive: [systemd]\n",
            &format!("    waive: [{waive}]\n{extra_hosts}"),
        );
        self.s.write_inventory(&format!(
            "settings:\n  domain: nautes.test\n  timeouts:\n    rollout: {rollout}\nssh:\n  identityFile: {key}\n  knownHosts: known_hosts\nartifacts:\n  mode: airgap\n  bundle: bundle\n{hosts}components:\n{components}",
            key = self.hosts.client_key().display(),
        ));
    }

    fn standard(&self) {
        self.inventory("systemd", "", GITLAB_VALUES, "");
    }

    pub(super) fn apply(&self, only: &[&str]) -> std::process::Output {
        let mut args = vec!["--yes", "apply", "-i", "inventory.yaml", "--only"];
        args.extend_from_slice(only);
        self.command(&args).output().unwrap()
    }

    pub(super) fn apply_ok(&self, only: &[&str]) -> String {
        let out = self.apply(only);
        assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
        stderr(&out)
    }

    pub(super) fn file(&self, i: usize, path: &str) -> String {
        std::fs::read_to_string(self.hosts.host_path(i, path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    pub(super) fn mode(&self, i: usize, path: &str) -> (u32, u32) {
        let m = std::fs::metadata(self.hosts.host_path(i, path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        (m.permissions().mode() & 0o7777, m.uid())
    }

    /// A command on host `i`, as the host sees its files.
    pub(super) fn on_host(&self, i: usize, cmd: &str) -> String {
        let out = Command::new("ssh")
            .args(["-i", self.hosts.client_key().to_str().unwrap()])
            .args([
                "-o",
                &format!("UserKnownHostsFile={}", self.s.path().join("known_hosts").display()),
            ])
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-p", "2222"])
            .arg(format!("root@{}", self.hosts.hosts[i].address))
            .arg(cmd)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn exists_on_host(&self, i: usize, path: &str) -> bool {
        self.on_host(i, &format!("test -e {path} && echo yes || echo no")) == "yes"
    }

    fn systemctl_calls(&self, i: usize) -> Vec<String> {
        std::fs::read_to_string(self.hosts.host_path(i, "/opt/nautes/standin/systemd/calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub(super) fn gitlab_ctl_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.hosts.host_path(G, "/opt/nautes/standin/gitlab-ctl.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn vault_log(&self) -> String {
        self.unit_log(V, "vault.service")
    }

    /// What a unit's process wrote (the `systemctl` stand-in keeps it).
    fn unit_log(&self, i: usize, unit: &str) -> String {
        std::fs::read_to_string(
            self.hosts
                .host_path(i, &format!("/opt/nautes/standin/systemd/{unit}.log")),
        )
        .unwrap_or_default()
    }

    /// The pid of a unit's process, as the `systemctl` stand-in recorded it.
    fn unit_pid(&self, i: usize, unit: &str) -> String {
        std::fs::read_to_string(
            self.hosts
                .host_path(i, &format!("/opt/nautes/standin/systemd/{unit}.pid")),
        )
        .unwrap_or_else(|e| panic!("{unit} has no pid: {e}"))
        .trim()
        .to_string()
    }

    pub(super) fn outputs(&self, step: &str) -> serde_json::Value {
        self.s.state()["steps"][step]["outputs"].clone()
    }

    fn pki(&self, name: &str) -> PathBuf {
        self.s.workdir().join("outputs/pki").join(name)
    }
}

const GITLAB_VALUES: &str = "    values:\n      registry: true\n      keepDataOnDestroy: true\n";

/// Calls that change a unit's state (not the read-only `show`/`is-enabled`).
fn actions(calls: &[String]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| !c.starts_with("show ") && !c.starts_with("is-enabled ") && !c.starts_with("is-active "))
        .cloned()
        .collect()
}

fn sha256(path: &Path) -> String {
    nautes_install::util::sha256_file(path).unwrap()
}

fn uid_of(user: &str) -> u32 {
    std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == user).then(|| f[2].parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no user {user}"))
}

#[test]
fn vault_and_gitlab_on_their_hosts_install_rerun_renew_upgrade_and_tear_down() {
    if !ready() {
        return;
    }
    let e = env();
    let both = ["vault/host", "gitlab/host"];

    // Preflight first: these hosts run no systemd, and nothing is installed
    // on a host that fails a rule it has not waived.
    e.inventory("", "", GITLAB_VALUES, "");
    let out = e.apply(&both);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("host vault-1 failed task `Preflight: systemd`: rule `systemd`"),
        "{err}"
    );
    assert!(!e.hosts.host_path(V, "/usr/local/bin/vault").exists());

    // Install.
    e.standard();
    let install = e.apply_ok(&both);

    // Vault: raft storage, a TLS listener on our certificate, the unit.
    let addr = e.hosts.hosts[V].address.clone();
    let hcl = e.file(V, "/etc/vault.d/vault.hcl");
    for want in [
        "storage \"raft\" {\n  path    = \"/opt/vault/data\"\n  node_id = \"vault-1\"\n}",
        "tls_cert_file   = \"/etc/vault.d/tls/vault.crt\"",
        "tls_key_file    = \"/etc/vault.d/tls/vault.key\"",
        "address         = \"0.0.0.0:8200\"",
        &format!("api_addr     = \"https://{addr}:8200\""),
        &format!("cluster_addr = \"https://{addr}:8201\""),
    ] {
        assert!(hcl.contains(want), "vault.hcl lacks {want:?}:\n{hcl}");
    }
    assert!(!hcl.contains("tls_disable"), "{hcl}");
    let vault_uid = uid_of("vault");
    assert_eq!(e.mode(V, "/etc/vault.d/tls/vault.key"), (0o600, vault_uid));
    assert_eq!(e.mode(V, "/etc/vault.d/vault.hcl").0, 0o640);
    assert_eq!(e.mode(V, "/usr/local/bin/vault"), (0o755, 0));
    assert_eq!(
        sha256(&e.hosts.host_path(V, "/etc/vault.d/tls/vault.crt")),
        sha256(&e.pki("vault-server.crt"))
    );
    assert_eq!(
        sha256(&e.hosts.host_path(V, "/etc/vault.d/tls/vault.key")),
        sha256(&e.pki("vault-server.key"))
    );
    let unit = e.file(V, "/etc/systemd/system/vault.service");
    for want in [
        "ExecStart=/usr/local/bin/vault server -config=/etc/vault.d/vault.hcl",
        "User=vault",
        "Restart=on-failure",
        "LimitMEMLOCK=infinity",
        "AmbientCapabilities=CAP_IPC_LOCK",
        "CapabilityBoundingSet=CAP_SYSLOG CAP_IPC_LOCK",
    ] {
        assert!(unit.contains(want), "the unit lacks {want}:\n{unit}");
    }
    let wants = e
        .hosts
        .host_path(V, "/etc/systemd/system/multi-user.target.wants/vault.service");
    assert_eq!(
        std::fs::read_link(&wants).ok(),
        Some(PathBuf::from("/etc/systemd/system/vault.service")),
        "enabled at boot"
    );
    // The unit was loaded before Vault started, once, and enabled.
    assert_eq!(
        actions(&e.systemctl_calls(V)),
        ["daemon-reload", "start vault.service", "enable vault.service"]
    );
    // Vault runs as `vault` (it read the 0600 key) and served the health check.
    let log = e.vault_log();
    assert!(
        log.contains(&format!("node_id=vault-1 on {addr}:8200 as uid {vault_uid}")),
        "{log}"
    );
    assert!(log.contains("\"GET /v1/sys/health HTTP/1.1\" 501"), "{log}");
    assert!(e.hosts.host_path(V, "/opt/vault/data/vault.db").exists());
    let vault_out = e.outputs("vault/host");
    assert_eq!(vault_out["url"], format!("https://{addr}:8200"));

    // GitLab: the package through dpkg, gitlab.rb, certificates, a root password.
    assert_eq!(
        e.on_host(G, "dpkg-query -W -f='${db:Status-Abbrev}${Version}' gitlab-ce"),
        format!("ii {GITLAB}")
    );
    let rb = e.file(G, "/etc/gitlab/gitlab.rb");
    assert!(rb.contains("external_url 'https://gitlab.nautes.test'"), "{rb}");
    assert!(rb.contains("letsencrypt['enable'] = false"), "{rb}");
    assert!(
        rb.contains("nginx['ssl_certificate'] = \"/etc/gitlab/ssl/gitlab.crt\""),
        "{rb}"
    );
    for off in [
        "prometheus_monitoring",
        "alertmanager",
        "grafana",
        "node_exporter",
        "redis_exporter",
        "postgres_exporter",
        "gitlab_kas",
        "mattermost",
        "gitlab_pages",
    ] {
        assert!(
            rb.contains(&format!("\n{off}['enable'] = false\n")),
            "{off} not off:\n{rb}"
        );
    }
    assert!(!rb.contains("registry['enable']"), "values.registry keeps it on:\n{rb}");
    assert_eq!(e.mode(G, "/etc/gitlab/gitlab.rb"), (0o600, 0));
    assert_eq!(e.mode(G, "/etc/gitlab/ssl/gitlab.key"), (0o600, 0));
    assert_eq!(
        sha256(&e.hosts.host_path(G, "/etc/gitlab/ssl/gitlab.crt")),
        sha256(&e.pki("gitlab-server.crt"))
    );
    assert_eq!(e.gitlab_ctl_calls(), ["reconfigure", "hup nginx"]);
    let gitlab_out = e.outputs("gitlab/host");
    assert_eq!(gitlab_out["url"], "https://gitlab.nautes.test");
    let pw_file = PathBuf::from(gitlab_out["rootPasswordFile"].as_str().unwrap());
    assert_eq!(pw_file, e.s.workdir().join("outputs/gitlab/root-password"));
    assert_eq!(std::fs::metadata(&pw_file).unwrap().permissions().mode() & 0o777, 0o600);
    let password = std::fs::read_to_string(&pw_file).unwrap();
    assert!(password.len() >= 32);
    // GitLab was seeded with exactly that password...
    let seeded = e.file(G, "/var/opt/gitlab/standin/root-password.sha256");
    assert_eq!(seeded, {
        use sha2::Digest;
        nautes_install::util::hex(&sha2::Sha256::digest(password.trim().as_bytes()))
    });
    // ...which is nowhere else: not in state, output, logs or the files given to Ansible.
    let state = std::fs::read_to_string(e.s.workdir().join("state.json")).unwrap();
    assert!(!state.contains(password.trim()) && !install.contains(password.trim()));
    for entry in walk(&e.s.workdir()) {
        if entry != pw_file {
            let text = std::fs::read(&entry).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&text).contains(password.trim()),
                "{} holds the root password",
                entry.display()
            );
        }
    }
    assert!(!e.s.workdir().join("service-hosts/gitlab/secrets.json").exists());
    let nginx = std::fs::read_to_string(e.hosts.host_path(G, "/opt/nautes/standin/gitlab-nginx.log")).unwrap();
    assert!(nginx.contains("\"GET /-/readiness HTTP/1.1\" 200"), "{nginx}");

    // A re-run changes nothing and restarts nothing.
    let calls_v = e.systemctl_calls(V).len();
    e.apply_ok(&both);
    assert_eq!(e.outputs("vault/host")["changed"], 0);
    assert_eq!(e.outputs("gitlab/host")["changed"], 0);
    assert!(
        actions(&e.systemctl_calls(V)[calls_v..]).is_empty(),
        "{:?}",
        &e.systemctl_calls(V)[calls_v..]
    );
    assert_eq!(e.gitlab_ctl_calls(), ["reconfigure", "hup nginx"]);

    // drift reads each host once and finds both as the playbook left
    // them; gitlab.rb edited on the host is named, and nothing else.
    let host_drift = |e: &Env| {
        let out = e
            .command(&["drift", "-i", "inventory.yaml", "--output", "json"])
            .output()
            .unwrap();
        let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap_or_else(|_| panic!("{}", stderr(&out)));
        assert_eq!(
            doc["hostRoundTrips"],
            serde_json::json!({"vault-1": 1, "gitlab-1": 1}),
            "{doc:#}"
        );
        let mut found = Vec::new();
        for step in doc["steps"].as_array().unwrap() {
            if both.contains(&step["id"].as_str().unwrap()) {
                assert_eq!(step["result"], "checked", "{step}");
                for d in step["differences"].as_array().unwrap() {
                    found.push(format!(
                        "{}: {} {}",
                        step["id"].as_str().unwrap(),
                        d["change"].as_str().unwrap(),
                        d["object"].as_str().unwrap()
                    ));
                }
            }
        }
        found
    };
    assert_eq!(host_drift(&e), Vec::<String>::new());
    let rb_path = e.hosts.host_path(G, "/etc/gitlab/gitlab.rb");
    std::fs::write(&rb_path, format!("{rb}gitlab_rails['time_zone'] = 'UTC'\n")).unwrap();
    assert_eq!(
        host_drift(&e),
        ["gitlab/host: changed file /etc/gitlab/gitlab.rb on gitlab-1"]
    );
    std::fs::write(&rb_path, &rb).unwrap();
    assert_eq!(host_drift(&e), Vec::<String>::new());

    // The readiness waits trust our CA only: services whose certificates
    // another CA signed do not pass.
    let ours = std::fs::read(e.pki("ca.crt")).unwrap();
    let (_, other_ca) = ca::make_ca(e.s.path(), "other", "Someone Else", 2);
    std::fs::copy(other_ca, e.pki("ca.crt")).unwrap();
    let out = e.apply(&both);
    std::fs::write(e.pki("ca.crt"), &ours).unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("failed task `Wait until Vault answers over verified TLS`")
            && err.contains("host gitlab-1 failed task `Wait until GitLab is ready`")
            && err.matches("CERTIFICATE_VERIFY_FAILED").count() >= 2,
        "{err}"
    );
    e.apply_ok(&both);
    // GitLab was reconfigured for each change of the CA it trusts, and only then.
    assert_eq!(
        e.gitlab_ctl_calls(),
        ["reconfigure", "hup nginx", "reconfigure", "reconfigure"]
    );

    // A renewed certificate is reloaded (SIGHUP), not restarted: a restart
    // would seal Vault. GitLab, whose certificate did not change, is left alone.
    std::fs::remove_file(e.pki("vault-server.crt")).unwrap();
    let calls_v = e.systemctl_calls(V).len();
    e.apply_ok(&["pki", "vault/host", "gitlab/host"]);
    assert_eq!(actions(&e.systemctl_calls(V)[calls_v..]), ["reload vault.service"]);
    let renewed = sha256(&e.pki("vault-server.crt"));
    assert!(
        e.vault_log().contains(&format!("loaded certificate sha256={renewed}")),
        "{}",
        e.vault_log()
    );
    assert_eq!(e.outputs("gitlab/host")["changed"], 0);
    assert_eq!(e.gitlab_ctl_calls().len(), 4);

    // A configuration change restarts Vault (the unit did not change: no daemon-reload).
    e.inventory("systemd", "", GITLAB_VALUES, "    internalAddress: 10.200.0.1\n");
    let calls_v = e.systemctl_calls(V).len();
    e.apply_ok(&["vault/host"]);
    assert!(e
        .file(V, "/etc/vault.d/vault.hcl")
        .contains("cluster_addr = \"https://10.200.0.1:8201\""));
    assert_eq!(actions(&e.systemctl_calls(V)[calls_v..]), ["restart vault.service"]);

    // GitLab upgrade: the new package, reconfigured; grafana is gone from
    // 16.3 on (the stand-in refuses it as GitLab does).
    e.inventory(
        "systemd",
        "",
        &format!("    version: {GITLAB_NEXT}\n{GITLAB_VALUES}"),
        "",
    );
    e.apply_ok(&["gitlab/host"]);
    assert_eq!(
        e.on_host(G, "dpkg-query -W -f='${db:Status-Abbrev}${Version}' gitlab-ce"),
        format!("ii {GITLAB_NEXT}")
    );
    assert!(!e.file(G, "/etc/gitlab/gitlab.rb").contains("grafana"));
    assert_eq!(e.gitlab_ctl_calls()[4..], ["reconfigure".to_string()]);
    // A downgrade is refused: GitLab cannot migrate its database back.
    e.standard();
    let out = e.apply(&["gitlab/host"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("host gitlab-1 failed task `Refuse a downgrade"),
        "{}",
        stderr(&out)
    );
    assert_eq!(e.on_host(G, "dpkg-query -W -f='${Version}' gitlab-ce"), GITLAB_NEXT);

    // Teardown: Vault's unit, configuration, binary and data go (it keeps no
    // data by default); GitLab's package and configuration go, its data and
    // secrets stay (keepDataOnDestroy), and so does its root password.
    e.inventory(
        "systemd",
        "",
        &format!("    version: {GITLAB_NEXT}\n{GITLAB_VALUES}"),
        "",
    );
    let vault_pid = e.unit_pid(V, "vault.service");
    assert!(alive(&vault_pid));
    let out = e
        .command(&["--yes", "destroy", "-i", "inventory.yaml"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let calls = e.systemctl_calls(V);
    assert_eq!(
        actions(&calls[calls.len() - 3..]),
        ["disable vault.service", "stop vault.service", "daemon-reload"]
    );
    for gone in [
        "/etc/systemd/system/vault.service",
        "/etc/vault.d/vault.hcl",
        "/etc/vault.d/tls",
        "/usr/local/bin/vault",
        "/opt/vault/data",
        "/opt/nautes/vault",
    ] {
        assert!(!e.exists_on_host(V, gone), "{gone} is still there");
    }
    assert!(!alive(&vault_pid), "Vault was stopped");
    assert_eq!(
        e.on_host(G, "dpkg-query -W gitlab-ce >/dev/null 2>&1 && echo installed"),
        ""
    );
    for gone in ["/etc/gitlab/gitlab.rb", "/etc/gitlab/ssl", "/opt/gitlab/bin/gitlab-ctl"] {
        assert!(!e.exists_on_host(G, gone), "{gone} is still there");
    }
    for kept in [
        "/var/opt/gitlab/standin/root-password.sha256",
        "/etc/gitlab/gitlab-secrets.json",
    ] {
        assert!(e.exists_on_host(G, kept), "{kept} was removed");
    }
    assert!(pw_file.exists(), "the kept data's root password is kept");
    assert_eq!(e.gitlab_ctl_calls()[5..], ["stop".to_string(), "uninstall".to_string()]);
    assert!(e.s.state()["steps"].as_object().unwrap().is_empty());
}

#[test]
fn openbao_on_its_host_is_the_real_bao_initialised_and_unsealed_through_its_api() {
    if !ready() || vault::skip_unless_available() {
        return;
    }
    let bao = vault::bao_binary().unwrap();
    // The real server listens on 0.0.0.0:8200 and :8201, in the one network
    // every test host shares.
    let e = hosts_env(&["vault-1"], true);
    make_openbao_bundle(&e.s, &bao);
    e.write_inventory(
        "systemd",
        "60s",
        "  vault:\n    placement: host\n    host: vault-1\n    distribution: openbao\n",
        "",
    );
    let steps = ["vault/host", "vault/configure"];
    let install = e.apply_ok(&steps);

    // OpenBao's binary, names and directories; nothing of Vault's.
    assert_eq!(sha256(&e.hosts.host_path(V, "/usr/local/bin/bao")), sha256(&bao));
    assert_eq!(e.mode(V, "/usr/local/bin/bao"), (0o755, 0));
    assert!(!e.hosts.host_path(V, "/usr/local/bin/vault").exists());
    assert!(!e.hosts.host_path(V, "/etc/vault.d/vault.hcl").exists());
    let unit = e.file(V, "/etc/systemd/system/openbao.service");
    for want in [
        "Description=OpenBao - A tool for managing secrets",
        "ConditionFileNotEmpty=/etc/openbao/openbao.hcl",
        "User=openbao",
        "Group=openbao",
        "ExecStart=/usr/local/bin/bao server -config=/etc/openbao/openbao.hcl",
    ] {
        assert!(unit.contains(want), "the unit lacks {want}:\n{unit}");
    }
    let hcl = e.file(V, "/etc/openbao/openbao.hcl");
    for want in [
        "storage \"raft\" {\n  path    = \"/opt/openbao/data\"\n  node_id = \"vault-1\"\n}",
        "tls_cert_file   = \"/etc/openbao/tls/openbao.crt\"",
        "tls_key_file    = \"/etc/openbao/tls/openbao.key\"",
    ] {
        assert!(hcl.contains(want), "openbao.hcl lacks {want:?}:\n{hcl}");
    }
    // OpenBao 2 has no mlock: the field would be an unknown one to it.
    assert!(!hcl.contains("disable_mlock"), "{hcl}");
    let openbao_uid = uid_of("openbao");
    assert_eq!(e.mode(V, "/etc/openbao/tls/openbao.key"), (0o600, openbao_uid));
    assert_eq!(
        actions(&e.systemctl_calls(V)),
        ["daemon-reload", "start openbao.service", "enable openbao.service"]
    );
    // The unit runs the real bao, as openbao, on its raft storage.
    let pid = e.unit_pid(V, "openbao.service");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().nth(1),
        Some(openbao_uid.to_string().as_str()),
        "{uid_line}"
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        PathBuf::from("/usr/local/bin/bao")
    );
    let log = e.unit_log(V, "openbao.service");
    assert!(log.contains("core: vault is unsealed"), "{log}");
    assert!(!log.contains("unknown or unsupported field"), "{log}");

    // The installer initialised and unsealed it through its API.
    let configure = e.outputs("vault/configure");
    assert_eq!(configure["initialisedNow"], true);
    assert!(
        configure["written"]
            .as_array()
            .unwrap()
            .contains(&json!("auth/approle/role/vault-proxy")),
        "{configure}"
    );
    let url = e.outputs("vault/host")["url"].as_str().unwrap().to_string();
    assert_eq!(url, format!("https://{}:8200", e.hosts.hosts[V].address));
    let ca = std::fs::read_to_string(e.pki("ca.crt")).unwrap();
    let (status, health) = http::Call::new("GET", format!("{url}/v1/sys/health"))
        .trust(ca.clone())
        .json();
    assert_eq!(
        (status, &health["initialized"], &health["sealed"]),
        (200, &json!(true), &json!(false))
    );
    let secrets = e.s.workdir().join("outputs/vault");
    let root = std::fs::read_to_string(secrets.join("root-token")).unwrap();
    let (status, mounts) = http::Call::new("GET", format!("{url}/v1/sys/mounts"))
        .header("X-Vault-Token", root.trim())
        .trust(ca.clone())
        .json();
    assert_eq!(status, 200, "{mounts}");
    for engine in ["pki", "git", "repo", "cluster", "tenant"] {
        let m = &mounts["data"][format!("{engine}/")];
        assert_eq!(
            (&m["type"], &m["options"]["version"]),
            (&json!("kv"), &json!("2")),
            "{engine}: {m}"
        );
    }

    // A re-run changes nothing: no task, no unit, no write to OpenBao.
    let calls = e.systemctl_calls(V).len();
    let rerun = e.apply_ok(&steps);
    assert_eq!(e.outputs("vault/host")["changed"], 0);
    assert!(
        actions(&e.systemctl_calls(V)[calls..]).is_empty(),
        "{:?}",
        &e.systemctl_calls(V)[calls..]
    );
    let configure = e.outputs("vault/configure");
    assert_eq!(configure["initialisedNow"], false);
    assert_eq!(configure["written"], json!([]));
    assert_eq!(e.unit_pid(V, "openbao.service"), pid, "not restarted");

    // The root token and unseal keys are in their 0600 files only.
    let mut keys = vec![root.trim().to_string()];
    for i in 1..=5 {
        keys.push(
            std::fs::read_to_string(secrets.join(format!("unseal-key-{i}")))
                .unwrap()
                .trim()
                .to_string(),
        );
    }
    for entry in walk(&e.s.workdir()) {
        if entry.starts_with(&secrets) {
            assert_eq!(std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777, 0o600);
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&entry).unwrap_or_default()).into_owned();
        for key in &keys {
            assert!(!text.contains(key.as_str()), "{} holds a secret", entry.display());
        }
    }
    for key in &keys {
        assert!(!install.contains(key.as_str()) && !rerun.contains(key.as_str()));
    }

    // Teardown stops OpenBao and removes its unit, configuration, binary and data.
    let out = e
        .command(&["--yes", "destroy", "-i", "inventory.yaml"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for gone in [
        "/etc/systemd/system/openbao.service",
        "/etc/openbao/openbao.hcl",
        "/etc/openbao/tls",
        "/usr/local/bin/bao",
        "/opt/openbao/data",
        "/opt/nautes/openbao",
    ] {
        assert!(!e.exists_on_host(V, gone), "{gone} is still there");
    }
    assert!(!alive(&pid), "OpenBao was stopped");
}

/// A process that has not exited (zombies count as exited).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !matches!(
                s.rsplit(')').next().unwrap_or("").split_whitespace().next(),
                Some("Z" | "X")
            )
        })
        .unwrap_or(false)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
