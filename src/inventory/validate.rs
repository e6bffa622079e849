//! Rules that types alone cannot express: names, references between
//! sections, networks, HA quorum, and files that must exist with safe
//! permissions. Every rule adds to one report so the user sees all of them.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;

use super::diagnostics::{Diagnostic, Report};
use super::load::Loaded;
use super::spans::{push_index, push_key};
use super::types::*;
use crate::catalog;
use crate::versions;

/// Check a loaded inventory; the report holds every finding (maybe none).
pub fn validate(loaded: &Loaded) -> Report {
    let mut v = Validator {
        loaded,
        report: loaded.report(),
    };
    v.header();
    v.timeouts();
    v.names();
    v.ssh_defaults();
    v.hosts();
    v.artifacts();
    v.infrastructure();
    v.clusters();
    v.virtual_clusters();
    v.tenants();
    v.components();
    v.pki();
    v.state_backend();
    v.hooks();
    super::registries::validate(loaded, &mut v.report);
    super::tenant_sign_in::validate(loaded, &mut v.report);
    v.report.sort();
    v.report
}

struct Validator<'a> {
    loaded: &'a Loaded,
    report: Report,
}

/// The kinds of target a tenant or component can name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Cluster,
    Virtual,
}

impl<'a> Validator<'a> {
    fn inv(&self) -> &'a Inventory {
        &self.loaded.inventory
    }

    fn error(&mut self, path: &str, message: impl Into<String>, hint: impl Into<String>) {
        let span = self.loaded.spans.value(path);
        self.report
            .diagnostics
            .push(Diagnostic::error(path, message).with_hint(hint).at(span));
    }

    fn warning(&mut self, path: &str, message: impl Into<String>, hint: impl Into<String>) {
        let span = self.loaded.spans.value(path);
        self.report
            .diagnostics
            .push(Diagnostic::warning(path, message).with_hint(hint).at(span));
    }

    fn line_of(&self, path: &str) -> usize {
        self.loaded.spans.value(path).map(|s| s.line).unwrap_or(0)
    }

    fn header(&mut self) {
        let inv = self.inv();
        if inv.api_version != API_VERSION {
            self.error(
                "apiVersion",
                format!("unsupported apiVersion `{}`", inv.api_version),
                format!("this release reads `{API_VERSION}`"),
            );
        }
        if inv.kind != KIND {
            self.error(
                "kind",
                format!("unsupported kind `{}`", inv.kind),
                format!("write `kind: {KIND}`"),
            );
        }
        self.dns_label("metadata.name", &inv.metadata.name);
        if let Some(domain) = &inv.settings.domain {
            if let Err(why) = check_dns_name(domain) {
                let message = if domain.is_empty() {
                    "settings.domain is empty".to_string()
                } else {
                    format!("`{}` is not a DNS domain: {why}", shorten(domain))
                };
                self.error(
                    "settings.domain",
                    message,
                    "write the domain the platform's endpoints live under, e.g. `nautes.example.com` (lower-case labels separated by dots)",
                );
            }
        }
        if let Some(n) = inv.settings.concurrency {
            if n == 0 {
                self.error(
                    "settings.concurrency",
                    "concurrency must be at least 1",
                    "omit it to use the default",
                );
            }
        }
    }

    /// A limit of zero fails every wait at once, and one of years never
    /// fires; both are typos. `M` is months to humantime, so `10M` written
    /// for ten minutes would wait most of a year.
    fn timeouts(&mut self) {
        const DAY: u64 = 24 * 3600;
        let t = &self.inv().settings.timeouts;
        let mut limits: Vec<(String, Option<super::duration::HumanDuration>)> = vec![
            ("settings.timeouts.sshConnect".into(), t.ssh_connect),
            ("settings.timeouts.command".into(), t.command),
            ("settings.timeouts.hook".into(), t.hook),
            ("settings.timeouts.nodeReady".into(), t.node_ready),
            ("settings.timeouts.rollout".into(), t.rollout),
            ("settings.timeouts.http".into(), t.http),
            ("settings.timeouts.terraform".into(), t.terraform),
            ("settings.timeouts.ansible".into(), t.ansible),
        ];
        for (i, h) in self.inv().hooks.iter().enumerate() {
            limits.push((push_key(&push_index("hooks", i), "timeout"), h.timeout));
        }
        for (path, limit) in limits {
            let Some(d) = limit else { continue };
            let secs = d.get().as_secs();
            let written = self
                .loaded
                .spans
                .value(&path)
                .and_then(|s| self.loaded.source.get(s.start..s.end))
                .unwrap_or("")
                .trim_matches(|c| c == '"' || c == '\'')
                .to_string();
            if d.get().is_zero() {
                self.error(
                    &path,
                    "a timeout of zero would fail every wait at once",
                    "write a real limit such as `30s` or `10m`, or omit it for the default",
                );
            } else if secs > 366 * DAY {
                let shown = if written.is_empty() {
                    d.to_string()
                } else {
                    written.clone()
                };
                self.error(
                    &path,
                    format!("a timeout of {shown} would never fire"),
                    "write a limit a person would wait, such as `30s`, `10m` or `2h`",
                );
            } else if written.contains('M') || secs > DAY {
                let months = if written.contains('M') {
                    format!("`{written}` means months (minutes are `m`); ")
                } else {
                    String::new()
                };
                self.warning(
                    &path,
                    format!("{months}a timeout of {d} is longer than anyone would wait"),
                    "minutes are `m`, hours `h`: e.g. `10m`",
                );
            }
        }
    }

    // ---- state backend ----------------------------------------------------

    fn state_backend(&mut self) {
        let st = &self.inv().state;
        let Some(k) = &st.kubernetes else {
            if st.backend == StateBackendKind::Kubernetes {
                self.error(
                    "state.backend",
                    "`backend: kubernetes` needs a `kubernetes` section",
                    "add `kubernetes: { kubeconfig: PATH, namespace: NAME }` under `state`",
                );
            }
            return;
        };
        if st.backend != StateBackendKind::Kubernetes {
            self.warning(
                "state.kubernetes",
                "`state.kubernetes` is ignored: the backend is `local`",
                "set `state.backend: kubernetes` to keep the state in the cluster",
            );
        }
        self.file("state.kubernetes.kubeconfig", &k.kubeconfig, true);
        if let Some(installed) = self.installed_cluster_of(&k.kubeconfig) {
            self.error(
                "state.kubernetes.kubeconfig",
                format!(
                    "the state would live in `{installed}`, a cluster this inventory installs: its kubeconfig is one of the installer's outputs"
                ),
                "keep the state in a cluster that exists before the install and outlives a teardown",
            );
        }
        self.dns_label("state.kubernetes.namespace", &k.namespace);
        if let Some(name) = &k.name {
            // Chunk Secrets add `-<generation>-<n>` to the name.
            if let Err(why) = check_dns_label(name) {
                self.error(
                    "state.kubernetes.name",
                    format!("`{name}` is not a valid name: {why}"),
                    "use lower-case letters, digits and '-' (DNS-1123 label)",
                );
            } else if name.len() > 40 {
                self.error(
                    "state.kubernetes.name",
                    format!("`{name}` is longer than 40 characters"),
                    "the state's extra Secrets add a suffix to it; pick a shorter name",
                );
            }
        }
        if let Some(d) = k.lease_duration {
            let secs = d.get().as_secs();
            if !(2..=3600).contains(&secs) {
                self.error(
                    "state.kubernetes.leaseDuration",
                    format!("a lease of {d} is out of range"),
                    "write between `2s` and `1h` (default `30s`); it is renewed every third of it",
                );
            }
        }
    }

    /// The cluster (or vcluster) this inventory installs whose kubeconfig
    /// `file` is: in the outputs directory the inventory names, or at
    /// `outputs/<name>/...` for one of its clusters (the default outputs
    /// directory is `<workdir>/outputs`, and the workdir is not known here).
    fn installed_cluster_of(&self, file: &Path) -> Option<String> {
        let inv = self.inv();
        let resolved = normalize(&std::path::absolute(self.loaded.resolve(file)).ok()?);
        let installed: Vec<&str> = inv
            .clusters
            .iter()
            .filter(|c| c.external.is_none())
            .map(|c| c.name.as_str())
            .chain(inv.virtual_clusters.iter().map(|v| v.name.as_str()))
            .collect();
        if let Some(dir) = &inv.outputs.dir {
            let dir = normalize(&std::path::absolute(self.loaded.resolve(dir)).ok()?);
            if let Ok(rest) = resolved.strip_prefix(&dir) {
                let first = rest.components().next()?.as_os_str().to_string_lossy().into_owned();
                return Some(first);
            }
        }
        let parent = resolved.parent()?;
        let name = parent.file_name()?.to_string_lossy().into_owned();
        let in_outputs = parent.parent()?.file_name().is_some_and(|d| d == "outputs");
        (in_outputs && installed.contains(&name.as_str())).then_some(name)
    }

    // ---- names ------------------------------------------------------------

    fn dns_label(&mut self, path: &str, name: &str) {
        if let Err(why) = check_dns_label(name) {
            self.error(
                path,
                format!("`{name}` is not a valid name: {why}"),
                "use lower-case letters, digits and '-', start and end with a letter or digit, at most 63 characters (DNS-1123 label)",
            );
        }
    }

    /// Report the second and later uses of a name within one namespace.
    fn unique<'n>(&mut self, what: &str, entries: impl IntoIterator<Item = (String, &'n str)>) {
        let mut seen: HashMap<&str, String> = HashMap::new();
        for (path, name) in entries {
            match seen.get(name) {
                Some(first) => {
                    let line = self.line_of(first);
                    self.error(
                        &path,
                        format!("duplicate {what} name `{name}`"),
                        format!("`{name}` is already defined at {first} (line {line}); names must be unique"),
                    );
                }
                None => {
                    seen.insert(name, path);
                }
            }
        }
    }

    fn names(&mut self) {
        let inv = self.inv();
        let mut hosts: Vec<(String, &str)> = inv
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (push_key(&push_index("hosts", i), "name"), h.name.as_str()))
            .collect();
        for (m, module) in inv.infrastructure.modules.iter().enumerate() {
            let base = push_index("infrastructure.modules", m);
            for (i, name) in module.provides.iter().enumerate() {
                hosts.push((push_index(&push_key(&base, "provides"), i), name.as_str()));
            }
        }
        for (path, name) in hosts.clone() {
            self.dns_label(&path, name);
        }
        self.unique("host", hosts);

        let mut clusters: Vec<(String, &str)> = inv
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| (push_key(&push_index("clusters", i), "name"), c.name.as_str()))
            .collect();
        clusters.extend(
            inv.virtual_clusters
                .iter()
                .enumerate()
                .map(|(i, c)| (push_key(&push_index("virtualClusters", i), "name"), c.name.as_str())),
        );
        for (path, name) in clusters.clone() {
            self.dns_label(&path, name);
        }
        self.unique("cluster", clusters);

        let tenants: Vec<(String, &str)> = inv
            .tenants
            .iter()
            .enumerate()
            .map(|(i, t)| (push_key(&push_index("tenants", i), "name"), t.name.as_str()))
            .collect();
        for (path, name) in tenants.clone() {
            self.dns_label(&path, name);
        }
        self.unique("tenant", tenants);

        let hooks: Vec<(String, &str)> = inv
            .hooks
            .iter()
            .enumerate()
            .map(|(i, h)| (push_key(&push_index("hooks", i), "name"), h.name.as_str()))
            .collect();
        for (path, name) in hooks.clone() {
            self.dns_label(&path, name);
        }
        self.unique("hook", hooks);

        let modules: Vec<(String, &str)> = inv
            .infrastructure
            .modules
            .iter()
            .enumerate()
            .map(|(i, m)| {
                (
                    push_key(&push_index("infrastructure.modules", i), "name"),
                    m.name.as_str(),
                )
            })
            .collect();
        for (path, name) in modules.clone() {
            self.dns_label(&path, name);
        }
        self.unique("Terraform module", modules);
    }

    // ---- references -------------------------------------------------------

    fn host_names(&self) -> Vec<&'a str> {
        let inv = self.inv();
        inv.hosts
            .iter()
            .map(|h| h.name.as_str())
            .chain(
                inv.infrastructure
                    .modules
                    .iter()
                    .flat_map(|m| m.provides.iter().map(String::as_str)),
            )
            .collect()
    }

    fn host_ref(&mut self, path: &str, name: &str) {
        let names = self.host_names();
        if !names.contains(&name) {
            let hint = match closest(name, &names) {
                Some(c) => {
                    format!("did you mean `{c}`? hosts are defined under `hosts` (or a Terraform module's `provides`)")
                }
                None => "define it under `hosts` (or list it in a Terraform module's `provides`)".to_string(),
            };
            self.error(path, format!("unknown host `{name}`"), hint);
        }
    }

    fn target_ref(&mut self, path: &str, name: &str, allowed: &[Target]) -> Option<Target> {
        let inv = self.inv();
        let found = if inv.clusters.iter().any(|c| c.name == name) {
            Some(Target::Cluster)
        } else if inv.virtual_clusters.iter().any(|c| c.name == name) {
            Some(Target::Virtual)
        } else {
            None
        };
        match found {
            Some(t) if allowed.contains(&t) => Some(t),
            Some(_) => {
                self.error(
                    path,
                    format!("`{name}` is a virtual cluster; a host cluster is needed here"),
                    "name a cluster from `clusters`",
                );
                None
            }
            None => {
                let mut names: Vec<&str> = inv.clusters.iter().map(|c| c.name.as_str()).collect();
                if allowed.contains(&Target::Virtual) {
                    names.extend(inv.virtual_clusters.iter().map(|c| c.name.as_str()));
                }
                let hint = match closest(name, &names) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None if names.is_empty() => "no clusters are defined; add one under `clusters`".to_string(),
                    None => format!("defined clusters: {}", names.join(", ")),
                };
                self.error(path, format!("unknown cluster `{name}`"), hint);
                None
            }
        }
    }

    fn pki(&mut self) {
        let pki = &self.inv().pki;
        if let Some(ca) = &pki.ca {
            self.file("pki.ca.cert", &ca.cert, false);
            self.secret("pki.ca.key", &ca.key);
        }
        let validity = pki.validity();
        let renew = pki.renew_before();
        if renew >= validity {
            self.error(
                if pki.renew_before.is_some() {
                    "pki.renewBefore"
                } else {
                    "pki.validity"
                },
                format!(
                    "certificates would be renewed {} before expiry but are only valid for {}",
                    humantime::format_duration(renew),
                    humantime::format_duration(validity)
                ),
                "make `renewBefore` shorter than `validity`",
            );
        }
    }

    // ---- files and secrets ------------------------------------------------

    fn file(&mut self, path: &str, file: &Path, private: bool) {
        let resolved = self.loaded.resolve(file);
        match std::fs::metadata(&resolved) {
            Err(e) => self.error(
                path,
                format!("file `{}` cannot be read: {e}", resolved.display()),
                "relative paths are relative to the inventory file",
            ),
            Ok(meta) if !meta.is_file() => self.error(
                path,
                format!("`{}` is not a file", resolved.display()),
                "point at a regular file",
            ),
            Ok(meta) => {
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode() & 0o777;
                if private && mode & 0o077 != 0 {
                    self.error(
                        path,
                        format!(
                            "`{}` holds a secret but is readable by others (mode {mode:o})",
                            resolved.display()
                        ),
                        format!("run `chmod 600 {}`", resolved.display()),
                    );
                }
            }
        }
    }

    fn dir(&mut self, path: &str, dir: &Path, hint: &str) {
        let resolved = self.loaded.resolve(dir);
        if !resolved.is_dir() {
            self.error(path, format!("directory `{}` does not exist", resolved.display()), hint);
        }
    }

    fn secret(&mut self, path: &str, secret: &SecretRef) {
        match (&secret.env, &secret.file) {
            (Some(_), Some(_)) | (None, None) => self.error(
                path,
                "a secret reference needs exactly one of `env` or `file`",
                "write `{ env: NAME }` or `{ file: path/to/secret }`",
            ),
            (Some(var), None) => {
                let valid = !var.is_empty()
                    && !var.starts_with(|c: char| c.is_ascii_digit())
                    && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    self.error(
                        &push_key(path, "env"),
                        format!("`{var}` is not a valid environment variable name"),
                        "use letters, digits and '_'",
                    );
                } else if std::env::var_os(var).is_none() {
                    self.warning(
                        &push_key(path, "env"),
                        format!("environment variable `{var}` is not set"),
                        "set it before `apply`; the value is read only when needed and never logged",
                    );
                }
            }
            (None, Some(file)) => self.file(&push_key(path, "file"), file, true),
        }
    }

    // ---- sections ---------------------------------------------------------

    fn ssh_defaults(&mut self) {
        let ssh = &self.inv().ssh;
        if let Some(f) = &ssh.identity_file {
            self.file("ssh.identityFile", f, true);
        }
        if let Some(f) = &ssh.config_file {
            self.file("ssh.configFile", f, false);
        }
        if let Some(s) = &ssh.sudo_password {
            self.secret("ssh.sudoPassword", s);
        }
        if ssh.port == Some(0) {
            self.error("ssh.port", "port 0 is not a valid SSH port", "the default is 22");
        }
        if ssh.user.as_deref().is_some_and(|u| u.trim().is_empty()) {
            self.error(
                "ssh.user",
                "the SSH login is empty",
                "write the user to log in as (e.g. `root`), or omit `user` to use ~/.ssh/config or your local user name",
            );
        }
        if ssh.sudo == Some(SudoMode::Password) && ssh.sudo_password.is_none() {
            self.error(
                "ssh.sudo",
                "sudo mode `password` needs `sudoPassword`",
                "add `sudoPassword: { env: SUDO_PASSWORD }`",
            );
        }
        if let Some(b) = &ssh.bastion {
            self.host_ref("ssh.bastion", b);
        }
    }

    fn hosts(&mut self) {
        let inv = self.inv();
        let mut endpoints: BTreeMap<(String, u16), String> = BTreeMap::new();
        for (i, h) in inv.hosts.iter().enumerate() {
            let base = push_index("hosts", i);
            let at = |f: &str| push_key(&base, f);
            if h.user.as_deref().is_some_and(|u| u.trim().is_empty()) {
                self.error(
                    &at("user"),
                    format!("host `{}` has an empty SSH login", h.name),
                    "write the user to log in as, or omit `user` to use `ssh.user`",
                );
            }
            if let Err(why) = check_address(&h.address) {
                self.error(
                    &at("address"),
                    format!("`{}` is not an IP address or DNS name: {why}", h.address),
                    "write an IPv4/IPv6 address or a host name",
                );
            }
            if let Some(a) = &h.internal_address {
                if a.parse::<IpAddr>().is_err() {
                    self.error(
                        &at("internalAddress"),
                        format!("`{a}` is not an IP address"),
                        "the internal address is what other nodes connect to; write an IP",
                    );
                }
            }
            let port = h.port.or(inv.ssh.port).unwrap_or(22);
            if h.port == Some(0) {
                self.error(&at("port"), "port 0 is not a valid SSH port", "the default is 22");
            }
            let key = (h.address.clone(), port);
            if let Some(first) = endpoints.get(&key) {
                let first = first.clone();
                self.error(
                    &at("address"),
                    format!("host `{}` has the same address and port as `{first}`", h.name),
                    "two inventory hosts cannot be the same machine",
                );
            } else {
                endpoints.insert(key, h.name.clone());
            }
            if let Some(f) = &h.identity_file {
                self.file(&at("identityFile"), f, true);
            }
            if let Some(s) = &h.sudo_password {
                self.secret(&at("sudoPassword"), s);
            }
            let sudo = h.sudo.or(inv.ssh.sudo);
            if sudo == Some(SudoMode::Password) && h.sudo_password.is_none() && inv.ssh.sudo_password.is_none() {
                self.error(
                    &at("sudo"),
                    "sudo mode `password` needs `sudoPassword` (on the host or under `ssh`)",
                    "add `sudoPassword: { env: SUDO_PASSWORD }`",
                );
            }
            if let Some(b) = &h.bastion {
                if b == &h.name {
                    self.error(
                        &at("bastion"),
                        "a host cannot be its own bastion",
                        "remove `bastion` or name another host",
                    );
                } else {
                    self.host_ref(&at("bastion"), b);
                }
            }
            for (w, rule) in h.waive.iter().enumerate() {
                if !PREFLIGHT_RULES.contains(&rule.as_str()) {
                    self.error(
                        &push_index(&at("waive"), w),
                        format!("unknown preflight rule `{rule}`"),
                        format!("rules: {}", PREFLIGHT_RULES.join(", ")),
                    );
                }
            }
        }
        self.bastion_cycles();
    }

    fn bastion_cycles(&mut self) {
        let inv = self.inv();
        let jumps: HashMap<&str, &str> = inv
            .hosts
            .iter()
            .filter_map(|h| h.bastion.as_deref().map(|b| (h.name.as_str(), b)))
            .collect();
        for (i, h) in inv.hosts.iter().enumerate() {
            let mut chain = vec![h.name.as_str()];
            let mut cur = h.name.as_str();
            while let Some(&next) = jumps.get(cur) {
                if next == h.name && chain.len() > 1 {
                    chain.push(next);
                    self.error(
                        &push_key(&push_index("hosts", i), "bastion"),
                        format!("bastion hosts form a loop: {}", chain.join(" -> ")),
                        "one host in the chain must be reachable directly",
                    );
                    break;
                }
                if chain.contains(&next) {
                    break;
                }
                chain.push(next);
                cur = next;
            }
        }
    }

    fn artifacts(&mut self) {
        let a = &self.inv().artifacts;
        match (a.mode, &a.bundle) {
            (ArtifactMode::Airgap, None) => self.error(
                "artifacts.mode",
                "air-gap mode needs `artifacts.bundle`",
                "point `bundle:` at the directory made by `nautes-install bundle fetch`",
            ),
            (_, Some(b)) => self.dir(
                "artifacts.bundle",
                b,
                "create it with `nautes-install bundle fetch` on a connected machine",
            ),
            _ => {}
        }
        for (registry, endpoints) in &a.mirrors {
            for (i, e) in endpoints.iter().enumerate() {
                if !(e.starts_with("https://") || e.starts_with("http://")) {
                    self.error(
                        &push_index(&push_key("artifacts.mirrors", registry), i),
                        format!("mirror endpoint `{e}` is not an http(s) URL"),
                        "write e.g. `https://registry.local:5000`",
                    );
                }
            }
        }
        if let Some(f) = &a.registry_ca_file {
            self.file("artifacts.registryCaFile", f, false);
        }
    }

    fn infrastructure(&mut self) {
        let infra = &self.inv().infrastructure;
        if let Some(f) = &infra.terraform.cli_config {
            self.file("infrastructure.terraform.cliConfig", f, false);
        }
        for (i, m) in infra.modules.iter().enumerate() {
            let base = push_index("infrastructure.modules", i);
            self.dir(
                &push_key(&base, "source"),
                &m.source,
                "point `source` at a directory with a Terraform module (see terraform/)",
            );
            for (name, s) in &m.secret_variables {
                self.secret(&push_key(&push_key(&base, "secretVariables"), name), s);
                if m.variables.contains_key(name) {
                    self.error(
                        &push_key(&push_key(&base, "variables"), name),
                        format!("variable `{name}` is set both as a plain and as a secret variable"),
                        "keep only the secret one",
                    );
                }
            }
            if m.provides.is_empty() {
                self.warning(
                    &push_key(&base, "provides"),
                    "the module provides no hosts",
                    "list the host names its `nautes_hosts` output will contain so clusters can use them",
                );
            }
        }
    }

    fn clusters(&mut self) {
        let inv = self.inv();
        let mut membership: HashMap<&str, String> = HashMap::new();
        for (i, c) in inv.clusters.iter().enumerate() {
            let base = push_index("clusters", i);
            let sections = [
                (ClusterType::K3s, "k3s", c.k3s.is_some()),
                (ClusterType::Kubespray, "kubespray", c.kubespray.is_some()),
                (ClusterType::External, "external", c.external.is_some()),
            ];
            for (ty, key, present) in sections {
                if ty == c.cluster_type && !present {
                    self.error(
                        &base,
                        format!("cluster `{}` has type `{key}` but no `{key}` section", c.name),
                        format!("add a `{key}:` section with its settings"),
                    );
                } else if ty != c.cluster_type && present {
                    self.error(
                        &push_key(&base, key),
                        format!("`{key}` settings on a cluster of another type"),
                        "remove the section or change `type`",
                    );
                }
            }
            let mut members: Vec<(String, &str)> = Vec::new();
            if let Some(k) = &c.k3s {
                let kb = push_key(&base, "k3s");
                if !is_k3s_release(&k.version) {
                    self.error(
                        &push_key(&kb, "version"),
                        format!("`{}` is not a K3s release", shorten(&k.version)),
                        "K3s releases are written `v<kubernetes version>+k3s<n>`, e.g. `v1.27.4+k3s1`",
                    );
                }
                if k.servers.is_empty() {
                    self.error(
                        &push_key(&kb, "servers"),
                        "a K3s cluster needs at least one server",
                        "list host names under `servers`",
                    );
                } else if k.servers.len() % 2 == 0 {
                    self.error(
                        &push_key(&kb, "servers"),
                        format!("{} servers cannot keep an embedded etcd quorum", k.servers.len()),
                        "embedded etcd needs an odd number of servers (1, 3, 5): with an even number, losing half the servers stops the cluster",
                    );
                }
                for (j, s) in k.servers.iter().enumerate() {
                    members.push((push_index(&push_key(&kb, "servers"), j), s));
                }
                for (j, s) in k.agents.iter().enumerate() {
                    members.push((push_index(&push_key(&kb, "agents"), j), s));
                }
                if let Some(t) = &k.token {
                    self.secret(&push_key(&kb, "token"), t);
                }
            }
            if let Some(k) = &c.kubespray {
                let kb = push_key(&base, "kubespray");
                self.version(&push_key(&kb, "version"), &k.version, "v2.23.1");
                if let Some(p) = &k.path {
                    self.dir(&push_key(&kb, "path"), p, "point `path` at a Kubespray checkout");
                }
                if k.control_plane.is_empty() {
                    self.error(
                        &push_key(&kb, "controlPlane"),
                        "a Kubespray cluster needs at least one control-plane host",
                        "list host names under `controlPlane`",
                    );
                }
                let etcd = if k.etcd.is_empty() { &k.control_plane } else { &k.etcd };
                if !etcd.is_empty() && etcd.len() % 2 == 0 {
                    let field = if k.etcd.is_empty() { "controlPlane" } else { "etcd" };
                    self.error(
                        &push_key(&kb, field),
                        format!("{} etcd members cannot keep a quorum", etcd.len()),
                        "etcd needs an odd number of members (1, 3, 5); list them under `etcd`",
                    );
                }
                for (j, s) in k.control_plane.iter().enumerate() {
                    members.push((push_index(&push_key(&kb, "controlPlane"), j), s));
                }
                for (j, s) in k.workers.iter().enumerate() {
                    members.push((push_index(&push_key(&kb, "workers"), j), s));
                }
                for (j, s) in k.etcd.iter().enumerate() {
                    let p = push_index(&push_key(&kb, "etcd"), j);
                    self.host_ref(&p, s);
                }
            }
            if let Some(e) = &c.external {
                self.file(
                    &push_key(&push_key(&base, "external"), "kubeconfig"),
                    &e.kubeconfig,
                    true,
                );
            }
            self.roles_match_use(&c.name, &members);
            let mut in_this: HashMap<&str, String> = HashMap::new();
            for (path, host) in members {
                self.host_ref(&path, host);
                if let Some(first) = in_this.get(host) {
                    let first = first.clone();
                    self.error(
                        &path,
                        format!("host `{host}` is listed twice in cluster `{}`", c.name),
                        format!("it is already at {first}; a host has one role per cluster"),
                    );
                    continue;
                }
                in_this.insert(host, path.clone());
                if let Some(other) = membership.get(host) {
                    let other = other.clone();
                    self.error(
                        &path,
                        format!("host `{host}` already belongs to another cluster"),
                        format!("see {other}; a host can be in one cluster only"),
                    );
                } else {
                    membership.insert(host, path.clone());
                }
            }
            self.networking(&push_key(&base, "networking"), &c.networking);
        }
    }

    /// A host's `roles` (free words) that say the opposite of how a cluster
    /// uses it: the inventory disagrees with itself, and which half is
    /// right is the user's call, not ours.
    fn roles_match_use(&mut self, cluster: &str, members: &[(String, &str)]) {
        const SERVER: &[&str] = &["server", "control-plane", "controlplane", "master"];
        const AGENT: &[&str] = &["agent", "worker", "node"];
        for (path, host) in members {
            let used_as_server = path.contains(".servers[") || path.contains(".controlPlane[");
            let used_as_agent = path.contains(".agents[") || path.contains(".workers[");
            let Some((i, h)) = self.inv().hosts.iter().enumerate().find(|(_, h)| h.name == *host) else {
                continue;
            };
            let says_server = h.roles.iter().any(|r| SERVER.contains(&r.as_str()));
            let says_agent = h.roles.iter().any(|r| AGENT.contains(&r.as_str()));
            let (used, said) = if used_as_server && says_agent && !says_server {
                ("a server (control plane)", "an agent")
            } else if used_as_agent && says_server && !says_agent {
                ("an agent (worker)", "a server")
            } else {
                continue;
            };
            self.error(
                path,
                format!(
                    "cluster `{cluster}` uses host `{host}` as {used}, but its roles [{}] say {said}",
                    h.roles.join(", ")
                ),
                format!(
                    "make `roles` at {} say what the cluster uses it for, or list the host in the other group",
                    push_key(&push_index("hosts", i), "roles")
                ),
            );
        }
    }

    fn version(&mut self, path: &str, version: &str, example: &str) {
        let digits = version.trim_start_matches('v');
        let ok = digits
            .split(['.', '+', '-'])
            .next()
            .is_some_and(|major| !major.is_empty() && major.chars().all(|c| c.is_ascii_digit()))
            && digits.contains('.')
            && !version.contains(char::is_whitespace);
        if !ok {
            self.error(
                path,
                format!("`{version}` is not a version"),
                format!("write a release such as `{example}`"),
            );
        }
    }

    /// A component's release must be one this installer knows how to
    /// install (see `crate::versions`): an unknown one would otherwise pass
    /// here and fail at `apply`, looking for a file no bundle or mirror has.
    /// `other`, when given, is what the version may have been meant for
    /// (Vault's releases when the inventory chose OpenBao): the hint says so.
    fn known_release(&mut self, path: &str, version: &str, known: &versions::Known, other: Option<&versions::Known>) {
        if known.has(version) {
            return;
        }
        let listed = known
            .releases
            .iter()
            .map(|r| format!("`{r}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut hint = format!(
            "known releases: {listed} (leave `version` out for the default, `{}`)",
            known.default_release()
        );
        if let Some(other) = other.filter(|o| o.has(version)) {
            hint.push_str(&format!("; `{version}` is a release of {}", other.title));
        }
        self.error(
            path,
            format!(
                "`{}` is not a release of {} this installer knows",
                shorten(version),
                known.title
            ),
            hint,
        );
    }

    fn networking(&mut self, base: &str, n: &Networking) {
        let pod = n.pod_cidr.as_deref().unwrap_or(DEFAULT_POD_CIDR);
        let svc = n.service_cidr.as_deref().unwrap_or(DEFAULT_SERVICE_CIDR);
        let pod_c = self.cidr(&push_key(base, "podCidr"), pod);
        let svc_c = self.cidr(&push_key(base, "serviceCidr"), svc);
        if let (Some(p), Some(s)) = (pod_c, svc_c) {
            if p.is_v6() != s.is_v6() {
                let family = |c: &Cidr| if c.is_v6() { "IPv6" } else { "IPv4" };
                self.error(
                    &push_key(
                        base,
                        if n.service_cidr.is_some() {
                            "serviceCidr"
                        } else {
                            "podCidr"
                        },
                    ),
                    format!(
                        "pod network {pod} is {} but service network {svc} is {}",
                        family(&p),
                        family(&s)
                    ),
                    "use one IP family for both (dual-stack clusters are not supported by this installer)",
                );
            } else if p.overlaps(&s) {
                self.error(
                    &push_key(
                        base,
                        if n.service_cidr.is_some() {
                            "serviceCidr"
                        } else {
                            "podCidr"
                        },
                    ),
                    format!("pod network {pod} and service network {svc} overlap"),
                    "pick disjoint ranges, e.g. pods 10.42.0.0/16 and services 10.43.0.0/16",
                );
            }
            for (i, h) in self.inv().hosts.iter().enumerate() {
                if let Ok(ip) = h.address.parse::<IpAddr>() {
                    if p.contains(ip) || s.contains(ip) {
                        self.warning(
                            &push_key(&push_index("hosts", i), "address"),
                            format!("host address {ip} lies inside the cluster's pod or service network"),
                            "traffic to this host from pods would be routed into the cluster network",
                        );
                    }
                }
            }
        }
        if let Some(dns) = &n.cluster_dns {
            match (dns.parse::<IpAddr>(), svc_c) {
                (Err(_), _) => self.error(
                    &push_key(base, "clusterDns"),
                    format!("`{dns}` is not an IP address"),
                    "write an IP inside the service network",
                ),
                (Ok(ip), Some(s)) if !s.contains(ip) => self.error(
                    &push_key(base, "clusterDns"),
                    format!("cluster DNS {ip} is outside the service network {svc}"),
                    "the DNS service IP must be allocated from the service CIDR",
                ),
                _ => {}
            }
        }
    }

    fn cidr(&mut self, path: &str, text: &str) -> Option<Cidr> {
        match Cidr::parse(text) {
            Ok(c) => Some(c),
            Err(why) => {
                self.error(
                    path,
                    format!("`{text}` is not a CIDR: {why}"),
                    "write e.g. `10.42.0.0/16`",
                );
                None
            }
        }
    }

    fn virtual_clusters(&mut self) {
        let inv = self.inv();
        let mut node_ports: HashMap<(&str, u16), String> = HashMap::new();
        // Traefik's NodePorts (chart defaults unless set) are taken on its cluster first.
        if let Some(t) = inv.components.enabled_one(catalog::TRAEFIK.key) {
            let port_of = |key: &str, default: u64| t.values.get(key).map_or(Some(default), |v| v.as_u64());
            if let (Some(web), Some(websecure)) = (port_of("webNodePort", 30080), port_of("websecureNodePort", 30443)) {
                if web == websecure {
                    let key = if t.values.contains_key("websecureNodePort") {
                        "websecureNodePort"
                    } else {
                        "webNodePort"
                    };
                    self.error(
                        &push_key("components.traefik.values", key),
                        format!("Traefik's web and websecure entry points would both be NodePort {web}"),
                        "give `webNodePort` and `websecureNodePort` different ports (defaults 30080 and 30443)",
                    );
                }
            }
            let cluster = t.cluster.as_deref().or(match inv.clusters.as_slice() {
                [only] => Some(only.name.as_str()),
                _ => None,
            });
            if let Some(cluster) = cluster {
                for (key, default) in [("webNodePort", 30080u16), ("websecureNodePort", 30443)] {
                    let port = match t.values.get(key) {
                        None => Some(default),
                        Some(v) => v.as_u64().and_then(|p| u16::try_from(p).ok()),
                    };
                    if let Some(p) = port {
                        let place = if t.values.contains_key(key) {
                            push_key("components.traefik.values", key)
                        } else {
                            format!("components.traefik (Traefik's default {key} {default})")
                        };
                        node_ports.entry((cluster, p)).or_insert(place);
                    }
                }
            }
        }
        for (i, vc) in inv.virtual_clusters.iter().enumerate() {
            let base = push_index("virtualClusters", i);
            self.target_ref(&push_key(&base, "hostCluster"), &vc.host_cluster, &[Target::Cluster]);
            if let Some(ns) = &vc.namespace {
                self.dns_label(&push_key(&base, "namespace"), ns);
            }
            if let Some(v) = &vc.version {
                self.known_release(&push_key(&base, "version"), v, &versions::VCLUSTER_CHART, None);
            }
            let eb = push_key(&base, "expose");
            match vc.expose.expose_type {
                ExposeType::NodePort => {
                    if let Some(p) = vc.expose.node_port {
                        if !(30000..=32767).contains(&p) {
                            self.error(
                                &push_key(&eb, "nodePort"),
                                format!("node port {p} is outside 30000-32767"),
                                "Kubernetes allocates NodePorts from 30000-32767 by default",
                            );
                        }
                        let key = (vc.host_cluster.as_str(), p);
                        if let Some(first) = node_ports.get(&key) {
                            let first = first.clone();
                            self.error(
                                &push_key(&eb, "nodePort"),
                                format!("node port {p} is already used on cluster `{}`", vc.host_cluster),
                                format!("it is taken by {first}; each NodePort on a cluster serves one thing"),
                            );
                        } else {
                            node_ports.insert(key, push_key(&eb, "nodePort"));
                        }
                    }
                }
                ExposeType::Ingress => {
                    if vc.expose.host.is_none() {
                        self.error(&eb, "ingress exposure needs `host`", "add `host: vc.example.com`");
                    }
                }
            }
        }
    }

    fn tenants(&mut self) {
        let inv = self.inv();
        let has_tree = inv.tenants.iter().any(|t| !t.namespaces.is_empty());
        if has_tree && inv.components.get(catalog::HNC.key).is_some_and(|c| !c.enabled) {
            self.error(
                "components.hnc.enabled",
                "tenant namespace trees need HNC, which is disabled",
                "enable HNC or remove the tenants' `namespaces`",
            );
        }
        let mut namespaces: HashMap<(&str, &str), String> = HashMap::new();
        for (i, t) in inv.tenants.iter().enumerate() {
            let base = push_index("tenants", i);
            self.target_ref(
                &push_key(&base, "cluster"),
                &t.cluster,
                &[Target::Cluster, Target::Virtual],
            );
            self.tenant_groups(&base, t);
            let mut stack: Vec<(String, &NamespaceNode)> = t
                .namespaces
                .iter()
                .enumerate()
                .map(|(j, n)| (push_index(&push_key(&base, "namespaces"), j), n))
                .collect();
            while let Some((path, node)) = stack.pop() {
                self.dns_label(&push_key(&path, "name"), &node.name);
                let key = (t.cluster.as_str(), node.name.as_str());
                if let Some(first) = namespaces.get(&key) {
                    let first = first.clone();
                    self.error(
                        &push_key(&path, "name"),
                        format!("namespace `{}` appears twice on cluster `{}`", node.name, t.cluster),
                        format!("first at {first}; namespace names are unique per cluster"),
                    );
                } else {
                    namespaces.insert(key, push_key(&path, "name"));
                }
                stack.extend(
                    node.children
                        .iter()
                        .enumerate()
                        .map(|(j, c)| (push_index(&push_key(&path, "children"), j), c)),
                );
            }
        }
    }

    /// A tenant's groups come from Dex's `groups` claim, so they need Dex;
    /// each group has one role in a tenant.
    fn tenant_groups(&mut self, base: &str, t: &Tenant) {
        if t.groups.is_empty() {
            return;
        }
        if !self.inv().components.enabled("dex") {
            self.error(
                &push_key(base, "groups"),
                format!("tenant `{}` grants groups, but no identity source reports them", t.name),
                "enable `components.dex` (which signs users in through GitLab and reports their groups), or remove `groups`",
            );
        }
        let mut seen: HashMap<&str, String> = HashMap::new();
        for (j, g) in t.groups.iter().enumerate() {
            let path = push_key(&push_index(&push_key(base, "groups"), j), "name");
            if g.name.trim().is_empty() {
                self.error(
                    &path,
                    "a group needs a name",
                    "the group's path as GitLab shows it, e.g. `acme/dev`",
                );
            } else if let Some(first) = seen.get(g.name.as_str()) {
                let first = first.clone();
                self.error(
                    &path,
                    format!("group `{}` appears twice in tenant `{}`", g.name, t.name),
                    format!("first at {first}; give each group one role"),
                );
            } else {
                seen.insert(&g.name, path);
            }
        }
    }

    fn components(&mut self) {
        let inv = self.inv();
        for key in inv.components.keys() {
            let base = push_key("components", key);
            if catalog::component(key).is_none() {
                let known: Vec<&str> = catalog::COMPONENTS.iter().map(|c| c.key).collect();
                let span = self.loaded.spans.key(&base).or_else(|| self.loaded.spans.value(&base));
                self.report.diagnostics.push(
                    Diagnostic::error(&base, format!("unknown component `{key}`"))
                        .with_hint(format!("allowed here: {}", known.join(", ")))
                        .at(span),
                );
            }
        }
        for (key, c) in inv.components.iter() {
            let base = push_key("components", key);
            let Some(entry) = catalog::component(key) else {
                continue; // reported above
            };
            let distribution = c.vault_distribution();
            if c.distribution.is_some() && key != "vault" {
                self.error(
                    &push_key(&base, "distribution"),
                    format!("`{key}` has no distribution to choose"),
                    "remove it: only `components.vault` chooses between `vault` and `openbao`",
                );
            }
            let (known, other) = if key == "vault" {
                let other = match distribution {
                    VaultDistribution::Vault => VaultDistribution::Openbao,
                    VaultDistribution::Openbao => VaultDistribution::Vault,
                };
                (distribution.releases(), Some(other.releases()))
            } else {
                (entry.versions, None)
            };
            if let Some(v) = &c.version {
                self.known_release(&push_key(&base, "version"), v, &known, other.as_ref());
            }
            match c.placement {
                Placement::Cluster if key == "vault" && distribution == VaultDistribution::Openbao => {
                    // In a cluster no Vault server is installed at all: only
                    // the agent injector from HashiCorp's chart, which has no
                    // OpenBao in it. Choosing OpenBao there would change nothing.
                    self.error(
                        &push_key(&base, "distribution"),
                        "OpenBao cannot be placed in a cluster",
                        "in a cluster this installer runs no Vault server, only the agent injector of HashiCorp's chart; \
                         install OpenBao on a host (`placement: host`) or configure yours (`placement: external`)",
                    );
                }
                Placement::Cluster => {
                    if let Some(cluster) = &c.cluster {
                        self.target_ref(
                            &push_key(&base, "cluster"),
                            cluster,
                            &[Target::Cluster, Target::Virtual],
                        );
                    } else if c.enabled && inv.clusters.is_empty() {
                        self.error(
                            &base,
                            format!("`{key}` is placed in a cluster but no cluster is defined"),
                            "add a cluster under `clusters` or set `placement`",
                        );
                    }
                }
                Placement::Host => {
                    if !entry.on_host {
                        let on_host: Vec<&str> = catalog::COMPONENTS
                            .iter()
                            .filter(|c| c.on_host)
                            .map(|c| c.key)
                            .collect();
                        self.error(
                            &push_key(&base, "placement"),
                            format!("`{key}` cannot be placed on a host"),
                            format!("only {} run on dedicated hosts", on_host.join(" and ")),
                        );
                    }
                    match &c.host {
                        Some(h) => self.host_ref(&push_key(&base, "host"), h),
                        None => self.error(
                            &base,
                            "placement `host` needs `host`",
                            "name the host from `hosts` to install on",
                        ),
                    }
                }
                Placement::External => match &c.external {
                    Some(e) => {
                        let eb = push_key(&base, "external");
                        if !(e.url.starts_with("https://") || e.url.starts_with("http://")) {
                            self.error(
                                &push_key(&eb, "url"),
                                format!("`{}` is not an http(s) URL", e.url),
                                "write e.g. `https://gitlab.example.com`",
                            );
                        }
                        if let Some(t) = &e.token {
                            self.secret(&push_key(&eb, "token"), t);
                        }
                        if let Some(f) = &e.ca_file {
                            self.file(&push_key(&eb, "caFile"), f, false);
                        }
                    }
                    None => self.error(
                        &base,
                        "placement `external` needs `external`",
                        "add `external: { url: ..., token: { env: ... } }`",
                    ),
                },
            }
            if c.placement != Placement::External && c.external.is_some() {
                self.error(
                    &push_key(&base, "external"),
                    "`external` is only read with `placement: external`",
                    "set `placement: external` or remove `external`",
                );
            }
        }
        self.component_dependencies();
    }

    fn component_dependencies(&mut self) {
        let c = &self.inv().components;
        let mut missing = Vec::new();
        for entry in catalog::COMPONENTS {
            if c.enabled(entry.key) {
                missing.extend(
                    entry
                        .needs
                        .iter()
                        .filter(|dep| !c.enabled(dep))
                        .map(|dep| (entry.key, *dep)),
                );
            }
        }
        for (name, dep) in missing {
            self.error(
                &push_key("components", name),
                format!("`{name}` needs `{dep}`, which is not enabled"),
                format!("enable `components.{dep}` (or point it at an existing one with `placement: external`)"),
            );
        }
    }

    fn hooks(&mut self) {
        let inv = self.inv();
        for (i, h) in inv.hooks.iter().enumerate() {
            let base = push_index("hooks", i);
            if h.run.trim().is_empty() {
                self.error(
                    &push_key(&base, "run"),
                    "the hook's command is empty",
                    "write the shell command to run",
                );
            }
            if let Some(on) = &h.on {
                if on != "local" {
                    self.host_ref(&push_key(&base, "on"), on);
                }
            }
        }
    }
}

/// Preflight rules a host may waive; the SSH layer implements them.
pub const PREFLIGHT_RULES: &[&str] = &[
    "os",
    "arch",
    "cpu",
    "memory",
    "disk",
    "swap",
    "systemd",
    "ports",
    "hostname",
    "clock",
    "sonarqube-kernel",
];

pub const DEFAULT_POD_CIDR: &str = "10.42.0.0/16";
pub const DEFAULT_SERVICE_CIDR: &str = "10.43.0.0/16";

/// `a/./b/../c` -> `a/c`, without touching the file system (the file may
/// not exist yet: it is an output).
fn normalize(path: &Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

pub fn check_dns_label(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > 63 {
        return Err("it is longer than 63 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err("it has characters other than a-z, 0-9 and '-'");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("it starts or ends with '-'");
    }
    Ok(())
}

/// A DNS name (several DNS-1123 labels), as certificates and ingress hosts need.
pub fn check_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    if name.ends_with('.') || name.starts_with('.') || name.contains("..") {
        return Err("empty label between dots");
    }
    for label in name.split('.') {
        check_dns_label(label)?;
    }
    Ok(())
}

/// `v1.27.4+k3s1`: K3s publishes nothing else, and the download URL and
/// the version check after install both rely on that form.
fn is_k3s_release(version: &str) -> bool {
    let Some(rest) = version.strip_prefix('v') else {
        return false;
    };
    let Some((kube, k3s)) = rest.split_once("+k3s") else {
        return false;
    };
    let kube = kube.split_once('-').map(|(v, _)| v).unwrap_or(kube);
    let parts: Vec<&str> = kube.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        && !k3s.is_empty()
        && k3s.chars().all(|c| c.is_ascii_digit())
}

/// Values quoted in messages are cut short: a pasted certificate should not
/// fill the screen.
fn shorten(text: &str) -> String {
    const MAX: usize = 60;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(MAX).collect::<String>())
    }
}

fn check_address(address: &str) -> Result<(), &'static str> {
    if address.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if address.is_empty() || address.len() > 253 {
        return Err("a DNS name has 1 to 253 characters");
    }
    if address.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    }) {
        if address.split('.').all(|l| l.chars().all(|c| c.is_ascii_digit())) {
            return Err("it looks like an IPv4 address but is not one");
        }
        Ok(())
    } else {
        Err("DNS labels hold letters, digits and '-' separated by '.'")
    }
}

/// The name nearest to `word` within a typo's distance, for "did you mean".
pub fn closest<'n>(word: &str, names: &[&'n str]) -> Option<&'n str> {
    names
        .iter()
        .map(|n| (strsim(word, n), *n))
        .filter(|(d, n)| *d <= 2.max(n.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

fn strsim(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// An IP network in prefix notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn is_v6(&self) -> bool {
        self.addr.is_ipv6()
    }

    pub fn parse(text: &str) -> Result<Cidr, &'static str> {
        let (ip, prefix) = text.split_once('/').ok_or("missing `/prefix`")?;
        let addr: IpAddr = ip.parse().map_err(|_| "the address part is not an IP")?;
        let prefix: u8 = prefix.parse().map_err(|_| "the prefix is not a number")?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err("the prefix is longer than the address");
        }
        Ok(Cidr { addr, prefix })
    }

    fn bits(ip: IpAddr) -> (u128, u8) {
        match ip {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
            IpAddr::V6(v6) => (u128::from(v6), 128),
        }
    }

    fn network(&self, prefix: u8) -> Option<u128> {
        let (bits, width) = Self::bits(self.addr);
        let shift = u32::from(width - prefix.min(width));
        Some(if shift >= 128 { 0 } else { bits >> shift })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let other = Cidr {
            addr: ip,
            prefix: self.prefix,
        };
        self.network(self.prefix) == other.network(self.prefix)
    }

    pub fn overlaps(&self, other: &Cidr) -> bool {
        if self.addr.is_ipv4() != other.addr.is_ipv4() {
            return false;
        }
        let p = self.prefix.min(other.prefix);
        self.network(p) == other.network(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_component_key_has_its_releases_in_the_versions_table() {
        // A component added to the inventory without its releases would take
        // any version unchecked.
        for c in catalog::COMPONENTS {
            assert!(
                !c.versions.releases.is_empty(),
                "{} has no releases in its catalog entry",
                c.key
            );
        }
    }

    const HEAD: &str = "apiVersion: install.nautes.io/v1alpha1\nkind: Inventory\nmetadata:\n  name: t\nhosts:\n  - { name: vault-1, address: 10.0.0.5 }\n";

    /// The diagnostics of an inventory with `vault` (one line of flow YAML)
    /// under `components`: (path, message, hint, line).
    fn vault_diagnostics(vault: &str) -> Vec<(String, String, String, usize)> {
        let src = format!("{HEAD}components:\n  vault: {vault}\n");
        let report = match crate::inventory::load_str(Path::new("inventory.yaml"), &src) {
            Ok(loaded) => validate(&loaded),
            Err(report) => report,
        };
        report
            .diagnostics
            .iter()
            .map(|d| {
                (
                    d.path.clone(),
                    d.message.clone(),
                    d.hint.clone().unwrap_or_default(),
                    d.span.map(|s| s.line).unwrap_or(0),
                )
            })
            .collect()
    }

    #[test]
    fn traefiks_two_entry_points_on_one_node_port_are_refused() {
        let src = format!("{HEAD}components:\n  traefik:\n    values: {{ websecureNodePort: 30080 }}\n");
        let loaded = crate::inventory::load_str(Path::new("inventory.yaml"), &src).unwrap_or_else(|r| panic!("{r:?}"));
        let d = validate(&loaded).diagnostics;
        let ours: Vec<_> = d
            .iter()
            .filter(|d| d.message.contains("both be NodePort 30080"))
            .collect();
        assert_eq!(ours.len(), 1, "{d:?}");
        assert_eq!(ours[0].path, "components.traefik.values.websecureNodePort");
        let src = format!("{HEAD}components:\n  traefik:\n    values: {{ websecureNodePort: 30081 }}\n");
        let loaded = crate::inventory::load_str(Path::new("inventory.yaml"), &src).unwrap();
        assert!(!validate(&loaded)
            .diagnostics
            .iter()
            .any(|d| d.message.contains("both be NodePort")));
    }

    #[test]
    fn an_unknown_component_is_refused_where_it_is_written_and_an_empty_one_is_absent() {
        let src = format!("{HEAD}components:\n  dex:\n  grafana: {{ version: 1.0.0 }}\n");
        let loaded = crate::inventory::load_str(Path::new("inventory.yaml"), &src).unwrap_or_else(|r| panic!("{r:?}"));
        let d = validate(&loaded).diagnostics;
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].path, "components.grafana");
        assert_eq!(d[0].message, "unknown component `grafana`");
        assert!(d[0].hint.as_deref().unwrap_or("").contains("certManager"), "{d:?}");
        let span = d[0].span.expect("the key's position");
        assert_eq!((span.line, span.col), (9, 3));
        // `dex:` without a value configures nothing (and so needs nothing).
        assert!(!loaded.inventory.components.enabled("dex"));
    }

    #[test]
    fn a_component_without_what_it_needs_is_refused_naming_both() {
        let diagnostics = |components: &str| -> Vec<(String, String)> {
            let src = format!("{HEAD}components:\n{components}");
            let loaded =
                crate::inventory::load_str(Path::new("inventory.yaml"), &src).unwrap_or_else(|r| panic!("{r:?}"));
            validate(&loaded)
                .diagnostics
                .into_iter()
                .filter(|d| d.message.contains("which is not enabled"))
                .map(|d| (d.path, d.message))
                .collect()
        };
        assert_eq!(
            diagnostics("  oauth2Proxy: {}\n"),
            [(
                "components.oauth2Proxy".to_string(),
                "`oauth2Proxy` needs `dex`, which is not enabled".to_string()
            )]
        );
        // Disabled counts as absent; every rule of the table is checked.
        let d = diagnostics("  dex: {}\n  gitlab: { enabled: false }\n  nautes: {}\n");
        let paths: Vec<&str> = d.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "components.dex",
                "components.nautes",
                "components.nautes",
                "components.nautes"
            ],
            "{d:?}"
        );
        assert!(diagnostics(
            "  dex: {}\n  gitlab: { placement: external, external: { url: https://gitlab.example.com } }\n"
        )
        .is_empty());
    }

    #[test]
    fn a_kubernetes_state_backend_is_checked_and_may_not_live_in_an_installed_cluster() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for f in ["shared.kubeconfig", "out/main/kubeconfig"] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "x").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let diagnostics = |state: &str| -> Vec<(String, String, usize)> {
            let src = format!("{HEAD}outputs: {{ dir: ./out }}\nstate:\n{state}");
            let loaded = crate::inventory::load_str(&dir.path().join("inventory.yaml"), &src)
                .unwrap_or_else(|r| panic!("{r:?}"));
            validate(&loaded)
                .diagnostics
                .into_iter()
                .map(|d| (d.path, d.message, d.span.map(|s| s.line).unwrap_or(0)))
                .collect()
        };
        let ok = "  backend: kubernetes\n  kubernetes: { kubeconfig: shared.kubeconfig, namespace: ops, leaseDuration: 5s }\n";
        assert_eq!(diagnostics(ok), []);
        let own = diagnostics(
            "  backend: kubernetes\n  kubernetes: { kubeconfig: ./out/./main/kubeconfig, namespace: ops }\n",
        );
        assert_eq!(own.len(), 1, "{own:?}");
        assert_eq!(own[0].0, "state.kubernetes.kubeconfig");
        assert!(
            own[0].1.contains("`main`, a cluster this inventory installs"),
            "{own:?}"
        );
        assert_eq!(own[0].2, 10, "points at the line of the kubeconfig");
        let missing = diagnostics("  backend: kubernetes\n");
        assert_eq!(missing[0].0, "state.backend", "{missing:?}");
        let bad = diagnostics(
            "  backend: kubernetes\n  kubernetes: { kubeconfig: shared.kubeconfig, namespace: Ops_1, leaseDuration: 1s }\n",
        );
        let paths: Vec<&str> = bad.iter().map(|d| d.0.as_str()).collect();
        assert_eq!(
            paths,
            ["state.kubernetes.namespace", "state.kubernetes.leaseDuration"],
            "{bad:?}"
        );
    }

    #[test]
    fn a_vault_distribution_other_than_the_two_is_refused_where_it_is_written() {
        let d = vault_diagnostics("{ placement: host, host: vault-1, distribution: hashicorp }");
        assert_eq!(d.len(), 1, "{d:?}");
        let (path, message, _, line) = &d[0];
        assert_eq!(path, "components.vault.distribution");
        assert!(
            message.contains("`hashicorp`") && message.contains("`vault` or `openbao`"),
            "{message}"
        );
        assert_eq!(*line, 8);
        // Both are accepted, and Vault is what an inventory without the key gets.
        for ok in ["distribution: vault", "distribution: openbao", "version: 1.10.4"] {
            assert!(
                vault_diagnostics(&format!("{{ placement: host, host: vault-1, {ok} }}")).is_empty(),
                "{ok}"
            );
        }
    }

    #[test]
    fn openbao_with_a_vault_release_is_refused_listing_openbao_releases() {
        let d = vault_diagnostics("{ placement: host, host: vault-1, distribution: openbao, version: 1.10.4 }");
        assert_eq!(d.len(), 1, "{d:?}");
        let (path, message, hint, line) = &d[0];
        assert_eq!(path, "components.vault.version");
        assert_eq!(message, "`1.10.4` is not a release of OpenBao this installer knows");
        assert_eq!(
            hint,
            "known releases: `2.7.2` (leave `version` out for the default, `2.7.2`); `1.10.4` is a release of Vault"
        );
        assert_eq!(*line, 8);
        assert!(
            vault_diagnostics("{ placement: host, host: vault-1, distribution: openbao, version: 2.7.2 }").is_empty()
        );
        // And the other way round.
        let d = vault_diagnostics("{ placement: host, host: vault-1, version: 2.7.2 }");
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].1, "`2.7.2` is not a release of Vault this installer knows");
        assert!(
            d[0].2.starts_with("known releases: `1.10.4` ") && d[0].2.ends_with("is a release of OpenBao"),
            "{}",
            d[0].2
        );
    }

    #[test]
    fn openbao_in_a_cluster_and_a_distribution_elsewhere_are_refused() {
        let d = vault_diagnostics("{ distribution: openbao }");
        let got: Vec<(&str, &str)> = d.iter().map(|d| (d.0.as_str(), d.1.as_str())).collect();
        assert_eq!(
            got,
            [("components.vault.distribution", "OpenBao cannot be placed in a cluster")]
        );
        assert!(d[0].2.contains("`placement: host`"), "{}", d[0].2);
        assert!(vault_diagnostics(
            "{ distribution: openbao, placement: external, external: { url: https://bao.example.com:8200 } }"
        )
        .is_empty());

        let src = format!("{HEAD}components:\n  gitlab: {{ placement: host, host: vault-1, distribution: openbao }}\n");
        let report = validate(&crate::inventory::load_str(Path::new("inventory.yaml"), &src).unwrap());
        let paths: Vec<&str> = report.diagnostics.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["components.gitlab.distribution"]);
    }

    #[test]
    fn cidr_overlap_and_containment() {
        let a = Cidr::parse("10.42.0.0/16").unwrap();
        let b = Cidr::parse("10.43.0.0/16").unwrap();
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(!a.overlaps(&b));
        assert!(a.overlaps(&c) && c.overlaps(&b));
        assert!(a.contains("10.42.3.4".parse().unwrap()));
        assert!(!a.contains("10.43.0.1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("fd00::/8")
            .unwrap()
            .overlaps(&Cidr::parse("fd12::/16").unwrap()));
    }

    #[test]
    fn dns_labels() {
        assert!(check_dns_label("node-1").is_ok());
        assert!(check_dns_label("Node").is_err());
        assert!(check_dns_label("-a").is_err());
        assert!(check_dns_label(&"a".repeat(64)).is_err());
    }

    #[test]
    fn addresses() {
        assert!(check_address("10.0.0.1").is_ok());
        assert!(check_address("::1").is_ok());
        assert!(check_address("gitlab.example.com").is_ok());
        assert!(check_address("10.0.0.256").is_err());
        assert!(check_address("bad_name").is_err());
    }
}
