//! What `drift` reads from hosts: the files the installer manages on each
//! host (their sha256) and a few version commands, fetched with one remote
//! script per host however many steps place files there. Steps say what
//! they will read first ([`HostReads::declare`], the engine asks every step
//! before any reads), then read; the first reader of a host runs the one
//! script for everything declared on it and the others share its answer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use crate::engine::{Change, Difference, StepContext, StepError};
use crate::steps::hosts::HostConn;
use crate::steps::remote::{connect, run_checked, sh_quote};

/// What a managed file should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// This content (its sha256).
    Sha256(String),
    /// There, whatever it holds (we know no content to compare against).
    Present,
    /// Not there: apply would remove it.
    Absent,
}

/// One file a step manages on a host.
#[derive(Debug, Clone)]
pub struct Expect {
    pub path: String,
    pub want: Want,
}

impl Expect {
    pub fn content(path: &str, content: &[u8]) -> Expect {
        Expect {
            path: path.to_string(),
            want: Want::Sha256(crate::util::sha256_hex(content)),
        }
    }

    pub fn sha256(path: &str, sha: &str) -> Expect {
        Expect {
            path: path.to_string(),
            want: Want::Sha256(sha.to_string()),
        }
    }

    pub fn present(path: &str) -> Expect {
        Expect {
            path: path.to_string(),
            want: Want::Present,
        }
    }

    pub fn absent(path: &str) -> Expect {
        Expect {
            path: path.to_string(),
            want: Want::Absent,
        }
    }
}

/// One host as read: each file's sha256 (None: no such file) and each
/// command's first line of output.
#[derive(Debug, Default)]
pub struct Live {
    pub files: BTreeMap<String, Option<String>>,
    pub outputs: BTreeMap<String, String>,
}

impl Live {
    /// How `expects` differ from what the host holds, objects named
    /// `file PATH on HOST`. Never holds content, only that it differs.
    pub fn compare(&self, host: &str, expects: &[Expect]) -> Vec<Difference> {
        let mut out = Vec::new();
        for e in expects {
            let have = self.files.get(&e.path).cloned().flatten();
            let change = match (&e.want, have) {
                (Want::Absent, Some(_)) => Some(Change::Extra),
                (Want::Absent, None) => None,
                (_, None) => Some(Change::Missing),
                (Want::Sha256(want), Some(have)) if *want != have => Some(Change::Changed),
                _ => None,
            };
            if let Some(change) = change {
                out.push(Difference {
                    object: format!("file {} on {host}", e.path),
                    change,
                    field: (change == Change::Changed).then(|| "content".to_string()),
                });
            }
        }
        out
    }

    pub fn output(&self, command: &str) -> &str {
        self.outputs.get(command).map(String::as_str).unwrap_or("")
    }

    /// `object`'s version as `command` printed it, unless it names
    /// `version`: missing when it printed nothing (not installed), else changed.
    pub fn version_difference(&self, command: &str, version: &str, object: String) -> Option<Difference> {
        let printed = self.output(command);
        (!printed.contains(version)).then(|| Difference {
            object,
            change: if printed.is_empty() {
                Change::Missing
            } else {
                Change::Changed
            },
            field: Some("version".into()),
        })
    }
}

#[derive(Default)]
struct Entry {
    paths: BTreeSet<String>,
    commands: BTreeSet<String>,
    read: Option<Arc<Live>>,
    /// Remote scripts run on this host.
    round_trips: usize,
    /// One read of the host at a time, so a second reader waits for the first's answer.
    reading: Arc<tokio::sync::Mutex<()>>,
}

/// The run's reads of hosts (a [`crate::engine::Services`] entry).
#[derive(Default)]
pub struct HostReads {
    hosts: Mutex<BTreeMap<String, Entry>>,
}

impl HostReads {
    /// The run's instance.
    pub fn of(ctx: &StepContext) -> Arc<HostReads> {
        ctx.services.get_or_insert_with(HostReads::default)
    }

    /// Say what a step will read on `host`, before anyone reads.
    pub fn declare<'a>(
        &self,
        host: &str,
        paths: impl IntoIterator<Item = &'a str>,
        commands: impl IntoIterator<Item = &'a str>,
    ) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let e = hosts.entry(host.to_string()).or_default();
        e.paths.extend(paths.into_iter().map(str::to_string));
        e.commands.extend(commands.into_iter().map(str::to_string));
    }

    /// What `conn` holds of everything declared on it (and of `paths` and
    /// `commands`, declared now if they were not): one remote script for
    /// the host, unless something is asked that the first read lacked.
    pub async fn read(
        &self,
        ctx: &StepContext,
        conn: &HostConn,
        paths: &[&str],
        commands: &[&str],
    ) -> Result<Arc<Live>, StepError> {
        self.declare(&conn.name, paths.iter().copied(), commands.iter().copied());
        let reading = {
            let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
            hosts[&conn.name].reading.clone()
        };
        let _one = reading.lock().await;
        let (paths, commands) = {
            let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
            let e = &hosts[&conn.name];
            if let Some(live) = &e.read {
                let lacks = e.paths.iter().any(|p| !live.files.contains_key(p))
                    || e.commands.iter().any(|c| !live.outputs.contains_key(c));
                if !lacks {
                    return Ok(live.clone());
                }
            }
            (
                e.paths.iter().cloned().collect::<Vec<_>>(),
                e.commands.iter().cloned().collect::<Vec<_>>(),
            )
        };
        let remote = connect(ctx, conn).await?;
        let out = run_checked(&*remote, &script(&paths, &commands)).await?;
        let live = Arc::new(parse(&conn.name, &out.stdout, &paths, &commands)?);
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let e = hosts.entry(conn.name.clone()).or_default();
        e.round_trips += 1;
        e.read = Some(live.clone());
        Ok(live)
    }

    /// Remote scripts run per host, for the figures.
    pub fn round_trips(&self) -> BTreeMap<String, usize> {
        let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts.iter().map(|(h, e)| (h.clone(), e.round_trips)).collect()
    }
}

/// One line per path (`F <sha256>` or `F -`), then one per command
/// (`C <first line of its output>`).
fn script(paths: &[String], commands: &[String]) -> String {
    let mut s = String::new();
    for p in paths {
        let q = sh_quote(p);
        s.push_str(&format!(
            "if [ -f {q} ]; then echo \"F $(sha256sum < {q} | cut -d' ' -f1)\"; else echo 'F -'; fi\n"
        ));
    }
    for c in commands {
        s.push_str(&format!(
            "printf 'C %s\\n' \"$( ( {c} ) 2>/dev/null | head -n 1 | tr -d '\\r\\n')\"\n"
        ));
    }
    s.push_str("true\n");
    s
}

fn parse(host: &str, stdout: &str, paths: &[String], commands: &[String]) -> Result<Live, StepError> {
    let lines: Vec<&str> = stdout.lines().collect();
    if lines.len() != paths.len() + commands.len() {
        return Err(StepError::new(format!(
            "{host}: reading the managed files answered {} lines for {} files and {} commands",
            lines.len(),
            paths.len(),
            commands.len()
        )));
    }
    let mut live = Live::default();
    for (p, line) in paths.iter().zip(&lines) {
        let sum = line.strip_prefix("F ").unwrap_or("-").trim();
        live.files
            .insert(p.clone(), (sum != "-" && !sum.is_empty()).then(|| sum.to_string()));
    }
    for (c, line) in commands.iter().zip(&lines[paths.len()..]) {
        live.outputs
            .insert(c.clone(), line.strip_prefix("C ").unwrap_or("").trim().to_string());
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_answers_one_line_per_file_and_command() {
        let dir = tempfile::tempdir().unwrap();
        let there = dir.path().join("a b");
        std::fs::write(&there, "x").unwrap();
        let paths = vec![
            there.display().to_string(),
            dir.path().join("none").display().to_string(),
        ];
        let commands = vec!["echo v1.2; echo more".to_string(), "false".to_string()];
        let out = std::process::Command::new("sh")
            .args(["-c", &script(&paths, &commands)])
            .output()
            .unwrap();
        let live = parse("h", &String::from_utf8_lossy(&out.stdout), &paths, &commands).unwrap();
        assert_eq!(
            live.files[&paths[0]].as_deref(),
            Some(crate::util::sha256_hex(b"x").as_str())
        );
        assert_eq!(live.files[&paths[1]], None);
        assert_eq!(live.output("echo v1.2; echo more"), "v1.2");
        assert_eq!(live.output("false"), "");
        let found = live.compare(
            "h",
            &[
                Expect::content(&paths[0], b"y"),
                Expect::absent(&paths[0]),
                Expect::present(&paths[1]),
                Expect::content(&paths[0], b"x"),
                Expect::absent(&paths[1]),
            ],
        );
        let labels: Vec<(Change, &str)> = found.iter().map(|d| (d.change, d.object.as_str())).collect();
        let a = format!("file {} on h", paths[0]);
        let b = format!("file {} on h", paths[1]);
        assert_eq!(
            labels,
            [
                (Change::Changed, a.as_str()),
                (Change::Extra, a.as_str()),
                (Change::Missing, b.as_str())
            ]
        );
    }
}
