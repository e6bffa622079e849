//! SSH fan-out against real sshd test hosts, side by side with Ansible on the
//! same hosts, in one run:
//!   1. facts + preflight: `nautes-install check` vs `ansible all -m setup`
//!      (forks = hosts, fresh SSH control sockets for both);
//!   2. one large file to every host, first run and re-run: our driver vs
//!      Ansible's `copy` module. A re-run must move 0 bytes.
//!
//! `cargo bench --bench ssh_fanout` runs 10 and 30 hosts with a 200 MB file
//! (set NAUTES_BENCH_MB to change it); `cargo test` runs a 2-host smoke.

#[path = "../tests/support/mod.rs"]
mod support;
use support::hosts;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nautes_install::drivers::ssh::{HostKeyPolicy, SshOptions, SshPool};

fn best_of<F: FnMut() -> Duration>(runs: usize, mut f: F) -> Duration {
    (0..runs).map(|_| f()).min().unwrap_or_default()
}

fn ansible_available() -> bool {
    Command::new("ansible")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn ansible(dir: &Path, hosts: &hosts::TestHosts, args: &[&str]) -> Duration {
    let control = tempfile::Builder::new().prefix("ac").tempdir_in("/tmp").unwrap();
    let start = Instant::now();
    let out = Command::new("ansible")
        .args(["all", "-i"])
        .arg(dir.join("hosts.ini"))
        .args(["-f", &hosts.hosts.len().to_string()])
        .args(args)
        .env("ANSIBLE_SSH_CONTROL_PATH_DIR", control.path())
        .env("ANSIBLE_PYTHON_INTERPRETER", "/usr/bin/python3")
        .env("ANSIBLE_HOST_KEY_CHECKING", "True")
        .env("ANSIBLE_STDOUT_CALLBACK", "minimal")
        .output()
        .expect("run ansible");
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "ansible failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    elapsed
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if let Some(why) = hosts::unavailable() {
        if std::env::var_os("CI").is_some() {
            panic!("{why}");
        }
        eprintln!("SKIPPED: {why}");
        return;
    }
    let sizes: &[usize] = if full { &[10, 30] } else { &[2] };
    let mb: u64 = if full {
        std::env::var("NAUTES_BENCH_MB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200)
    } else {
        2
    };
    let with_ansible = ansible_available();
    if !with_ansible {
        eprintln!("note: ansible not found; measuring nautes-install only");
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for &n in sizes {
        let hosts = hosts::TestHosts::start(n);
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        std::fs::write(&kh, hosts.known_hosts()).unwrap();
        let agents: Vec<String> = hosts.hosts.iter().skip(1).map(|h| h.name.clone()).collect();
        std::fs::write(
            dir.path().join("inventory.yaml"),
            format!(
                "apiVersion: install.nautes.io/v1alpha1\nkind: Inventory\nmetadata:\n  name: bench\nssh:\n  identityFile: {}\n  knownHosts: {}\n{}clusters:\n  - name: c\n    type: k3s\n    k3s:\n      version: v1.27.4+k3s1\n      servers: [node-1]\n      agents: [{}]\n",
                hosts.client_key().display(),
                kh.display(),
                hosts.inventory_hosts(),
                agents.join(", ")
            ),
        )
        .unwrap();
        let mut ini = String::from("[all]\n");
        for h in &hosts.hosts {
            ini.push_str(&format!(
                "{} ansible_host={} ansible_port={} ansible_user=root ansible_ssh_private_key_file={} ansible_ssh_common_args='-o UserKnownHostsFile={}'\n",
                h.name, h.address, hosts::PORT, hosts.client_key().display(), kh.display()
            ));
        }
        std::fs::write(dir.path().join("hosts.ini"), ini).unwrap();

        // 1. facts + preflight
        let ours = best_of(3, || {
            let start = Instant::now();
            let out = Command::new(env!("CARGO_BIN_EXE_nautes-install"))
                .current_dir(dir.path())
                .args(["--workdir", ".nautes", "check", "-i", "inventory.yaml"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "check failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            start.elapsed()
        });
        print!("facts+preflight  hosts={n:>3}  nautes-install {ours:>10.2?}");
        if with_ansible {
            let theirs = best_of(3, || ansible(dir.path(), &hosts, &["-m", "setup"]));
            print!(
                "  ansible -m setup {theirs:>10.2?}  ratio {:.1}x",
                theirs.as_secs_f64() / ours.as_secs_f64()
            );
        }
        println!();

        // 2. one large file to every host
        let big = dir.path().join("big.bin");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&big).unwrap();
            let chunk: Vec<u8> = (0..1_048_576u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
                .collect();
            for i in 0..mb {
                let mut c = chunk.clone();
                c[0] = i as u8;
                f.write_all(&c).unwrap();
            }
        }
        let pool = Arc::new(SshPool::new(SshOptions {
            known_hosts: kh.clone(),
            policy: HostKeyPolicy::Strict,
            control_dir: std::env::temp_dir().join(format!("nb-{}", std::process::id())),
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(600),
            connect_attempts: 1,
        }));
        let distribute = |dest: &'static str| {
            let start = Instant::now();
            let sent: u64 = runtime.block_on(async {
                let mut tasks = tokio::task::JoinSet::new();
                for i in 0..hosts.hosts.len() {
                    let pool = pool.clone();
                    let big = big.clone();
                    let target = hosts.ssh_target(i);
                    tasks.spawn(async move {
                        pool.connect(&target)
                            .await
                            .unwrap()
                            .upload(&big, dest, 0o644)
                            .await
                            .unwrap()
                    });
                }
                let mut total = 0;
                while let Some(r) = tasks.join_next().await {
                    total += r.unwrap();
                }
                total
            });
            (start.elapsed(), sent)
        };
        let (first, sent_first) = distribute("/opt/nautes/big.bin");
        let (again, sent_again) = distribute("/opt/nautes/big.bin");
        assert_eq!(sent_again, 0, "a re-run must move 0 bytes");
        print!("{mb} MB to hosts={n:>3}  nautes-install first {first:>9.2?} ({} MB sent)  re-run {again:>8.2?} ({sent_again} bytes)", sent_first / 1_048_576);
        if with_ansible {
            let copy = format!("src={} dest=/opt/nautes/big-ansible.bin mode=0644", big.display());
            let a_first = ansible(dir.path(), &hosts, &["-m", "copy", "-a", &copy]);
            let a_again = ansible(dir.path(), &hosts, &["-m", "copy", "-a", &copy]);
            print!(
                "  ansible copy first {a_first:>9.2?} re-run {a_again:>8.2?}  ratios {:.1}x / {:.1}x",
                a_first.as_secs_f64() / first.as_secs_f64(),
                a_again.as_secs_f64() / again.as_secs_f64()
            );
        }
        println!();
        runtime.block_on(pool.close_all());
        let _ = std::fs::remove_dir_all(&pool.options().control_dir);
    }
}
