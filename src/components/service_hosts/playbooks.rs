//! The Ansible playbooks the service-host steps run, embedded in the binary
//! so an installed `nautes-install` needs no checkout beside it, and written
//! out under the workdir before each run.

use std::path::{Path, PathBuf};

use super::io_error;
use crate::engine::StepError;
use crate::util::write_atomic;

/// Every file under playbooks/ the runs need, by path relative to it.
const PLAYBOOKS: &[(&str, &str)] = &[
    ("vault-host.yml", include_str!("../../../playbooks/vault-host.yml")),
    ("gitlab-host.yml", include_str!("../../../playbooks/gitlab-host.yml")),
    (
        "tasks/preflight.yml",
        include_str!("../../../playbooks/tasks/preflight.yml"),
    ),
    (
        "tasks/remove-paths.yml",
        include_str!("../../../playbooks/tasks/remove-paths.yml"),
    ),
    (
        "tasks/vault-present.yml",
        include_str!("../../../playbooks/tasks/vault-present.yml"),
    ),
    (
        "tasks/vault-absent.yml",
        include_str!("../../../playbooks/tasks/vault-absent.yml"),
    ),
    (
        "tasks/gitlab-present.yml",
        include_str!("../../../playbooks/tasks/gitlab-present.yml"),
    ),
    (
        "tasks/gitlab-absent.yml",
        include_str!("../../../playbooks/tasks/gitlab-absent.yml"),
    ),
    (
        "templates/vault.hcl.j2",
        include_str!("../../../playbooks/templates/vault.hcl.j2"),
    ),
    (
        "templates/vault.service.j2",
        include_str!("../../../playbooks/templates/vault.service.j2"),
    ),
    (
        "templates/gitlab.rb.j2",
        include_str!("../../../playbooks/templates/gitlab.rb.j2"),
    ),
];

/// Write the embedded playbooks under the workdir; returns their directory.
pub(super) fn write_playbooks(workdir: &Path) -> Result<PathBuf, StepError> {
    let dir = workdir.join("playbooks");
    for (rel, text) in PLAYBOOKS {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
        }
        write_atomic(&path, text.as_bytes(), 0o644).map_err(|e| io_error(&path, e))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_playbook_file_is_embedded_and_parses_as_yaml() {
        for (rel, text) in PLAYBOOKS {
            if rel.ends_with(".yml") {
                serde_yaml::from_str::<serde_yaml::Value>(text).unwrap_or_else(|e| panic!("{rel}: {e}"));
            }
        }
        // Every task file a playbook includes is embedded.
        for (_, text) in PLAYBOOKS {
            for line in text.lines().filter(|l| l.contains("include_tasks:")) {
                let target = line.split("include_tasks:").nth(1).unwrap().trim().trim_matches('"');
                let expanded: Vec<String> = ["present", "absent"]
                    .iter()
                    .map(|s| target.replace("{{ state }}", s))
                    .collect();
                for t in expanded {
                    let t = if t.starts_with("tasks/") {
                        t
                    } else {
                        format!("tasks/{t}")
                    };
                    assert!(PLAYBOOKS.iter().any(|(r, _)| *r == t), "{t} is not embedded");
                }
            }
        }
    }
}
