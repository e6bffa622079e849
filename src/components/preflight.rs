//! Facts and preflight: before K3s touches a host, check it can run it —
//! OS, architecture, CPUs, memory, disk, swap, systemd, free ports, unique
//! hostnames and clock skew across hosts, and on the hosts of the cluster
//! SonarQube runs on, the kernel limits its Elasticsearch needs. Every failing rule on every host
//! is reported at once; a rule can be waived per host in the inventory.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::k3s::Role;
use crate::inventory::Loaded;
use crate::plan::Step;
use crate::steps::hosts::{self, HostConn};

pub const KIND: &str = "preflight";

/// Distributions K3s supports; others need `os:` set on the host (an
/// explicit statement that the user takes responsibility), not a dead end.
const KNOWN_OS: &[&str] = &[
    "debian",
    "ubuntu",
    "rhel",
    "centos",
    "rocky",
    "almalinux",
    "fedora",
    "sles",
    "opensuse-leap",
    "ol",
    "amzn",
    "raspbian",
];
const MIN_CPUS: u32 = 1;
const MIN_MEMORY_MB: u64 = 1024;
const MIN_DISK_MB: u64 = 5 * 1024;
/// Hosts contacted at once when gathering facts.
const MAX_PARALLEL_HOSTS: usize = 64;
/// Clocks further apart than this break etcd leases and TLS validity checks.
const MAX_CLOCK_SKEW_MS: i64 = 2_000;
/// SonarQube's embedded Elasticsearch refuses to start below these (its
/// documented requirements for 9.x).
pub const SONARQUBE_MAX_MAP_COUNT: u64 = 524_288;
pub const SONARQUBE_FILE_MAX: u64 = 131_072;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCheck {
    pub name: String,
    pub role: Role,
    pub waive: Vec<String>,
    pub os_override: Option<String>,
    /// SonarQube may run here: check its kernel limits.
    #[serde(default)]
    pub sonarqube: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreflightSpec {
    pub cluster: String,
    pub hosts: Vec<HostCheck>,
    /// Several servers mean embedded etcd, which needs its peer ports.
    pub ha: bool,
}

/// What we learn about a host (one remote command).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    pub hostname: String,
    pub os_id: String,
    pub os_id_like: Vec<String>,
    pub os_version: String,
    pub arch: String,
    pub kernel: String,
    pub cpus: u32,
    pub mem_total_bytes: u64,
    /// Free bytes on the filesystem holding /var/lib/rancher.
    pub disk_free_bytes: u64,
    pub swap_total_bytes: u64,
    pub has_systemd: bool,
    pub listening_tcp: Vec<u16>,
    pub listening_udp: Vec<u16>,
    pub epoch_millis: i64,
    /// The host's clock minus ours, measured around the facts command so
    /// that gathering many hosts one after another does not look like skew.
    #[serde(default)]
    pub clock_offset_ms: i64,
    /// K3s is already installed (its own ports are then in use by design).
    pub k3s_installed: bool,
    /// `vm.max_map_count` and `fs.file-max`.
    #[serde(default)]
    pub max_map_count: u64,
    #[serde(default)]
    pub file_max: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub host: String,
    pub rule: String,
    pub ok: bool,
    pub waived: bool,
    pub message: String,
}

pub fn step_id(cluster: &str) -> String {
    format!("preflight/{cluster}")
}

/// Add the preflight step for one cluster's hosts; returns its id.
pub fn plan_cluster(loaded: &Loaded, cluster: &str, members: &[(&String, Role)], steps: &mut Vec<Step>) -> String {
    let mut checks = Vec::new();
    let mut conns: Vec<HostConn> = Vec::new();
    for (name, role) in members {
        let Some(conn) = hosts::connection(loaded, name) else {
            continue;
        };
        let host = hosts::find(loaded, name);
        checks.push(HostCheck {
            name: name.to_string(),
            role: *role,
            waive: host.map(|h| h.waive.clone()).unwrap_or_default(),
            os_override: host.and_then(|h| h.os.as_ref().map(|o| o.id.clone())),
            sonarqube: super::registries::sonarqube_runs_on(loaded, cluster),
        });
        conns.push(conn);
    }
    let servers = members.iter().filter(|(_, r)| *r == Role::Server).count();
    let id = step_id(cluster);
    let spec = PreflightSpec {
        cluster: cluster.to_string(),
        hosts: checks,
        ha: servers > 1,
    };
    // Hosts made by Terraform are checked after they exist (and, in
    // teardown, destroyed only after their cluster).
    let creators = members
        .iter()
        .filter_map(|(h, _)| super::infrastructure::provider_step(loaded, h));
    steps.push(
        Step::of(&id, format!("preflight checks of cluster {cluster}"), &spec)
            .needs(creators)
            .with_settings(json!(PreflightSettings { conns: Some(conns) })),
    );
    id
}

/// Ports a node of `role` must be able to bind.
pub fn required_ports(role: Role, ha: bool) -> (Vec<u16>, Vec<u16>) {
    let mut tcp = vec![10250];
    if role == Role::Server {
        tcp.push(6443);
        if ha {
            tcp.extend([2379, 2380]);
        }
    }
    (tcp, vec![8472])
}

/// Every rule on every host. `facts` holds what was gathered, by host name.
pub fn evaluate(spec: &PreflightSpec, facts: &BTreeMap<String, Facts>) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut push = |host: &HostCheck, rule: &str, ok: bool, message: String| {
        out.push(Finding {
            host: host.name.clone(),
            rule: rule.to_string(),
            ok,
            waived: !ok && host.waive.iter().any(|w| w == rule),
            message,
        });
    };
    let mut names: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut clocks: Vec<i64> = facts.values().map(|f| f.clock_offset_ms).collect();
    clocks.sort_unstable();
    let median = clocks.get(clocks.len() / 2).copied().unwrap_or(0);
    for host in &spec.hosts {
        let Some(f) = facts.get(&host.name) else {
            continue;
        };
        names.entry(f.hostname.as_str()).or_default().push(host.name.as_str());

        let os = host.os_override.clone().unwrap_or_else(|| f.os_id.clone());
        let known = KNOWN_OS.contains(&os.as_str()) || f.os_id_like.iter().any(|l| KNOWN_OS.contains(&l.as_str()));
        push(
            host,
            "os",
            known || host.os_override.is_some(),
            if known || host.os_override.is_some() {
                format!("{} {}", f.os_id, f.os_version)
            } else {
                format!("unrecognised distribution `{}` (ID_LIKE: {}); set `os: {{ id: <closest> }}` on the host to proceed", f.os_id, f.os_id_like.join(" "))
            },
        );
        let arch_ok = matches!(f.arch.as_str(), "x86_64" | "amd64");
        push(
            host,
            "arch",
            arch_ok,
            if arch_ok {
                f.arch.clone()
            } else {
                format!(
                    "architecture {} is not supported by this release's K3s artifacts (amd64 only)",
                    f.arch
                )
            },
        );
        push(host, "cpu", f.cpus >= MIN_CPUS, format!("{} CPUs", f.cpus));
        let mem_mb = f.mem_total_bytes / (1024 * 1024);
        push(
            host,
            "memory",
            mem_mb >= MIN_MEMORY_MB,
            format!("{mem_mb} MiB (need {MIN_MEMORY_MB})"),
        );
        let disk_mb = f.disk_free_bytes / (1024 * 1024);
        push(
            host,
            "disk",
            disk_mb >= MIN_DISK_MB,
            format!("{disk_mb} MiB free for /var/lib/rancher (need {MIN_DISK_MB})"),
        );
        push(
            host,
            "swap",
            f.swap_total_bytes == 0,
            if f.swap_total_bytes == 0 {
                "off".into()
            } else {
                format!(
                    "{} MiB of swap is on; the kubelet expects it off",
                    f.swap_total_bytes / (1024 * 1024)
                )
            },
        );
        push(
            host,
            "systemd",
            f.has_systemd,
            if f.has_systemd {
                "present".into()
            } else {
                "no systemd: the K3s service cannot be managed".into()
            },
        );
        if f.k3s_installed {
            push(
                host,
                "ports",
                true,
                "K3s already installed: its ports are its own".into(),
            );
        } else {
            let (tcp, udp) = required_ports(host.role, spec.ha);
            let busy: Vec<String> = tcp
                .iter()
                .filter(|p| f.listening_tcp.contains(p))
                .map(|p| format!("{p}/tcp"))
                .chain(
                    udp.iter()
                        .filter(|p| f.listening_udp.contains(p))
                        .map(|p| format!("{p}/udp")),
                )
                .collect();
            push(
                host,
                "ports",
                busy.is_empty(),
                if busy.is_empty() {
                    "free".into()
                } else {
                    format!("in use by another program: {}", busy.join(", "))
                },
            );
        }
        if host.sonarqube {
            let ok = f.max_map_count >= SONARQUBE_MAX_MAP_COUNT && f.file_max >= SONARQUBE_FILE_MAX;
            push(
                host,
                "sonarqube-kernel",
                ok,
                format!(
                    "vm.max_map_count {} (SonarQube needs {SONARQUBE_MAX_MAP_COUNT}), fs.file-max {} (needs {SONARQUBE_FILE_MAX}){}",
                    f.max_map_count,
                    f.file_max,
                    if ok {
                        ""
                    } else {
                        "; raise them with sysctl -w and in /etc/sysctl.d so they last"
                    }
                ),
            );
        }
        let skew = f.clock_offset_ms - median;
        push(
            host,
            "clock",
            skew.abs() <= MAX_CLOCK_SKEW_MS,
            format!("{skew:+} ms from the median of the cluster's hosts"),
        );
    }
    let clashes: BTreeSet<&str> = names
        .iter()
        .filter(|(_, hs)| hs.len() > 1)
        .flat_map(|(_, hs)| hs.iter().copied())
        .collect();
    for host in &spec.hosts {
        let Some(f) = facts.get(&host.name) else {
            continue;
        };
        let clash = clashes.contains(host.name.as_str());
        let others: Vec<&str> = names
            .get(f.hostname.as_str())
            .into_iter()
            .flatten()
            .copied()
            .filter(|h| *h != host.name)
            .collect();
        push(
            host,
            "hostname",
            !clash,
            if clash {
                format!(
                    "hostname `{}` is also the hostname of {}; node names must be unique",
                    f.hostname,
                    others.join(", ")
                )
            } else {
                f.hostname.clone()
            },
        );
    }
    out
}

/// A per-host table of findings, failures first.
pub fn table(findings: &[Finding]) -> String {
    let mut rows: Vec<&Finding> = findings.iter().collect();
    rows.sort_by_key(|f| (f.ok, f.waived, f.host.clone(), f.rule.clone()));
    let hw = rows.iter().map(|f| f.host.len()).max().unwrap_or(4).max(4);
    let mut s = format!("{:hw$}  {:8}  {:7}  detail\n", "host", "rule", "result");
    for f in rows {
        let result = if f.ok {
            "ok"
        } else if f.waived {
            "waived"
        } else {
            "FAIL"
        };
        s.push_str(&format!("{:hw$}  {:8}  {:7}  {}\n", f.host, f.rule, result, f.message));
    }
    s
}

/// Host checks; each cluster's component plans its own (see [`plan_cluster`]).
pub struct Preflight;

impl super::Component for Preflight {
    fn handlers(&self, registry: &mut crate::engine::Registry) {
        registry.add(PreflightHandler);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good(hostname: &str, clock: i64) -> Facts {
        Facts {
            hostname: hostname.into(),
            os_id: "debian".into(),
            os_version: "12".into(),
            arch: "x86_64".into(),
            cpus: 2,
            mem_total_bytes: 4 << 30,
            disk_free_bytes: 20 << 30,
            has_systemd: true,
            clock_offset_ms: clock,
            ..Facts::default()
        }
    }

    fn check(name: &str, role: Role, waive: &[&str]) -> HostCheck {
        HostCheck {
            name: name.into(),
            role,
            waive: waive.iter().map(|s| s.to_string()).collect(),
            os_override: None,
            sonarqube: false,
        }
    }

    #[test]
    fn sonarqube_hosts_need_its_kernel_limits_and_others_are_not_asked() {
        let mut sonar = check("s1", Role::Server, &[]);
        sonar.sonarqube = true;
        let mut tuned = check("s2", Role::Agent, &[]);
        tuned.sonarqube = true;
        let spec = PreflightSpec {
            cluster: "c".into(),
            hosts: vec![sonar, tuned, check("plain", Role::Agent, &[])],
            ha: false,
        };
        let low = Facts {
            max_map_count: 65_530,
            file_max: 2_000_000,
            ..good("s1", 0)
        };
        let ready = Facts {
            max_map_count: SONARQUBE_MAX_MAP_COUNT,
            file_max: SONARQUBE_FILE_MAX,
            ..good("s2", 0)
        };
        let facts = BTreeMap::from([
            ("s1".to_string(), low),
            ("s2".to_string(), ready),
            ("plain".to_string(), good("plain", 0)),
        ]);
        let findings = evaluate(&spec, &facts);
        assert_eq!(failing(&findings), [("s1".to_string(), "sonarqube-kernel".to_string())]);
        let s1 = findings
            .iter()
            .find(|f| f.host == "s1" && f.rule == "sonarqube-kernel")
            .unwrap();
        assert!(s1.message.contains("vm.max_map_count 65530"), "{}", s1.message);
        assert!(findings
            .iter()
            .any(|f| f.host == "s2" && f.rule == "sonarqube-kernel" && f.ok));
        assert!(!findings
            .iter()
            .any(|f| f.host == "plain" && f.rule == "sonarqube-kernel"));
        let mut spec = spec;
        spec.hosts[0].waive = vec!["sonarqube-kernel".into()];
        assert!(failing(&evaluate(&spec, &facts)).is_empty());
    }

    fn failing(findings: &[Finding]) -> Vec<(String, String)> {
        findings
            .iter()
            .filter(|f| !f.ok && !f.waived)
            .map(|f| (f.host.clone(), f.rule.clone()))
            .collect()
    }

    #[test]
    fn reports_every_failing_rule_on_every_host() {
        let spec = PreflightSpec {
            cluster: "c".into(),
            hosts: vec![
                check("a", Role::Server, &[]),
                check("b", Role::Agent, &["swap"]),
                check("c", Role::Agent, &[]),
            ],
            ha: false,
        };
        let mut a = good("same", 1_000_000);
        a.listening_tcp = vec![6443, 22];
        let mut b = good("same", 1_000_100);
        b.swap_total_bytes = 1 << 30;
        let mut c = good("c", 1_009_000);
        c.os_id = "plan9".into();
        let facts = BTreeMap::from([("a".to_string(), a), ("b".to_string(), b), ("c".to_string(), c)]);
        let findings = evaluate(&spec, &facts);
        let mut fails = failing(&findings);
        fails.sort();
        assert_eq!(
            fails,
            vec![
                ("a".into(), "hostname".into()),
                ("a".into(), "ports".into()),
                ("b".into(), "hostname".into()),
                ("c".into(), "clock".into()),
                ("c".into(), "os".into()),
            ]
        );
        assert!(findings.iter().any(|f| f.host == "b" && f.rule == "swap" && f.waived));
        let t = table(&findings);
        assert!(t.contains("in use by another program: 6443/tcp"), "{t}");
        assert!(t.lines().nth(1).unwrap().contains("FAIL"), "failures first:\n{t}");
    }

    #[test]
    fn an_installed_node_may_hold_its_own_ports_and_id_like_rescues_derivatives() {
        let spec = PreflightSpec {
            cluster: "c".into(),
            hosts: vec![check("a", Role::Server, &[])],
            ha: true,
        };
        let mut a = good("a", 0);
        a.listening_tcp = vec![6443, 2379, 2380, 10250];
        a.k3s_installed = true;
        a.os_id = "linuxmint".into();
        a.os_id_like = vec!["ubuntu".into(), "debian".into()];
        assert!(failing(&evaluate(&spec, &BTreeMap::from([("a".to_string(), a)]))).is_empty());
    }
}

/// One POSIX sh script that prints every fact as `key=value`, so a host
/// costs one round trip. Ports come from /proc/net (hex), which needs no
/// `ss`/`netstat` on minimal hosts.
pub const FACTS_SCRIPT: &str = r#"[ -r /etc/os-release ] && . /etc/os-release
echo "hostname=$(cat /proc/sys/kernel/hostname 2>/dev/null || hostname)"
echo "os_id=${ID:-unknown}"
echo "os_id_like=${ID_LIKE:-}"
echo "os_version=${VERSION_ID:-}"
echo "arch=$(uname -m)"
echo "kernel=$(uname -r)"
echo "cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null || echo 0)"
awk '/^MemTotal:/{print "mem_kb="$2} /^SwapTotal:/{print "swap_kb="$2}' /proc/meminfo
d=/var/lib/rancher; while [ ! -d "$d" ]; do d=$(dirname "$d"); done
echo "disk_free_kb=$(df -Pk "$d" | awk 'NR==2{print $4}')"
if [ -d /run/systemd/system ]; then echo systemd=1; else echo systemd=0; fi
echo "tcp=$(cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk 'NR>1 && $4=="0A"{n=split($2,a,":"); print a[n]}' | sort -u | tr '\n' ' ')"
echo "udp=$(cat /proc/net/udp /proc/net/udp6 2>/dev/null | awk 'NR>1 && $4=="07"{n=split($2,a,":"); print a[n]}' | sort -u | tr '\n' ' ')"
echo "epoch_ms=$(date +%s%3N)"
if [ -x /usr/local/bin/k3s ]; then echo k3s=1; else echo k3s=0; fi
echo "max_map_count=$(cat /proc/sys/vm/max_map_count 2>/dev/null || echo 0)"
echo "file_max=$(cat /proc/sys/fs/file-max 2>/dev/null || echo 0)"
"#;

/// Parse what [`FACTS_SCRIPT`] printed; a missing or garbled key is an
/// error naming the key, so a strange host is not silently judged.
pub fn parse_facts(text: &str) -> Result<Facts, String> {
    let kv: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let get = |k: &str| kv.get(k).copied().ok_or_else(|| format!("facts lack `{k}`"));
    let num = |k: &str| -> Result<u64, String> {
        get(k)?
            .parse::<u64>()
            .map_err(|_| format!("fact `{k}` is not a number: {:?}", kv.get(k)))
    };
    let ports = |k: &str| -> Result<Vec<u16>, String> {
        get(k)?
            .split_whitespace()
            .map(|h| u16::from_str_radix(h, 16).map_err(|_| format!("fact `{k}` has a bad port {h:?}")))
            .collect()
    };
    // Without GNU date, `%3N` stays literal: fall back to whole seconds.
    let epoch = get("epoch_ms")?;
    let epoch_millis = match epoch.parse::<i64>() {
        Ok(ms) => ms,
        Err(_) => epoch
            .trim_end_matches("3N")
            .trim_end_matches('%')
            .parse::<i64>()
            .map(|s| s * 1000)
            .map_err(|_| format!("fact `epoch_ms` is not a time: {epoch:?}"))?,
    };
    Ok(Facts {
        hostname: get("hostname")?.to_string(),
        os_id: get("os_id")?.to_string(),
        os_id_like: get("os_id_like")?.split_whitespace().map(str::to_string).collect(),
        os_version: get("os_version")?.to_string(),
        arch: get("arch")?.to_string(),
        kernel: get("kernel")?.to_string(),
        cpus: num("cpus")? as u32,
        mem_total_bytes: num("mem_kb")? * 1024,
        disk_free_bytes: num("disk_free_kb")? * 1024,
        swap_total_bytes: num("swap_kb")? * 1024,
        has_systemd: get("systemd")? == "1",
        listening_tcp: ports("tcp")?,
        listening_udp: ports("udp")?,
        epoch_millis,
        clock_offset_ms: 0,
        k3s_installed: get("k3s")? == "1",
        max_map_count: num("max_map_count")?,
        file_max: num("file_max")?,
    })
}

#[cfg(test)]
mod facts_tests {
    #[test]
    fn the_facts_script_runs_here_and_parses() {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(super::FACTS_SCRIPT)
            .output()
            .unwrap();
        let facts = super::parse_facts(&String::from_utf8_lossy(&out.stdout)).unwrap();
        assert!(facts.cpus >= 1 && facts.mem_total_bytes > 0 && facts.epoch_millis > 1_600_000_000_000);
        assert!(!facts.hostname.is_empty());
    }

    #[test]
    fn garbled_facts_name_the_key() {
        let err = super::parse_facts("hostname=a\n").unwrap_err();
        assert!(err.starts_with("facts lack `"), "{err}");
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs the checks: facts from every host at once, then every rule.
pub struct PreflightHandler;

/// Facts from each host (in parallel); unreachable hosts are listed, not fatal here.
pub async fn gather(ctx: &crate::engine::StepContext, conns: &[HostConn]) -> (BTreeMap<String, Facts>, Vec<String>) {
    let mut tasks = tokio::task::JoinSet::new();
    let connector = match crate::steps::remote::Connector::of(ctx) {
        Ok(c) => c,
        Err(e) => return (BTreeMap::new(), vec![e.message]),
    };
    // Bounded: each host costs an ssh process and a master socket here.
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_PARALLEL_HOSTS));
    for conn in conns {
        let conn = conn.clone();
        let connector = connector.clone();
        let slots = slots.clone();
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await.map_err(|e| e.to_string())?;
            let remote = connector.connect(&conn).await.map_err(|e| e.message)?;
            let sent = now_millis();
            let out = crate::steps::remote::run_checked(&*remote, FACTS_SCRIPT)
                .await
                .map_err(|e| e.message)?;
            let received = now_millis();
            let mut facts = parse_facts(&out.stdout).map_err(|e| format!("{}: {e}", conn.name))?;
            // The remote clock was read somewhere in between; the midpoint errs by at most half the round trip.
            facts.clock_offset_ms = facts.epoch_millis - (sent + received) / 2;
            Ok((conn.name.clone(), facts))
        });
    }
    let mut facts = BTreeMap::new();
    let mut errors = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok((name, f))) => {
                facts.insert(name, f);
            }
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(format!("internal error: {e}")),
        }
    }
    errors.sort();
    (facts, errors)
}

/// How to reach the cluster's hosts: a setting, since a changed address or
/// key is not a reason to re-check.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PreflightSettings {
    pub conns: Option<Vec<HostConn>>,
}

impl crate::plan::StepSpec for PreflightSpec {
    const KIND: &'static str = KIND;
}

#[async_trait::async_trait]
impl crate::engine::Handler for PreflightHandler {
    type Spec = PreflightSpec;

    async fn apply(
        &self,
        ctx: &crate::engine::StepContext,
        spec: &PreflightSpec,
    ) -> Result<serde_json::Value, crate::engine::StepError> {
        use crate::engine::StepError;
        let conns = ctx
            .settings::<PreflightSettings>()?
            .conns
            .ok_or_else(|| StepError::new("preflight step lacks its hosts (settings.conns)"))?;
        let (facts, unreachable) = gather(ctx, &conns).await;
        let findings = evaluate(spec, &facts);
        let report = table(&findings);
        tracing::info!(cluster = %spec.cluster, "preflight:\n{report}");
        let failed: Vec<&Finding> = findings.iter().filter(|f| !f.ok && !f.waived).collect();
        if !unreachable.is_empty() || !failed.is_empty() {
            let mut msg = format!("preflight of cluster {} failed", spec.cluster);
            if !unreachable.is_empty() {
                msg.push_str(&format!("; unreachable: {}", unreachable.join("; ")));
            }
            if !failed.is_empty() {
                msg.push_str(&format!(
                    "; {} rule(s) failed (waive one per host with `waive: [rule]` if you accept the risk):\n{report}",
                    failed.len()
                ));
            }
            return Err(StepError::new(msg));
        }
        Ok(json!({ "findings": findings, "facts": facts }))
    }

    async fn destroy(
        &self,
        _ctx: &crate::engine::StepContext,
        _spec: &PreflightSpec,
        _outputs: &serde_json::Value,
    ) -> Result<(), crate::engine::StepError> {
        Ok(())
    }
}
