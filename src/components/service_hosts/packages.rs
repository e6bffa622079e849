//! The one file each service is installed from, and which release that is:
//! the pinned version unless the inventory names another, found in the
//! air-gap bundle at `<name>/<version>/<file>` or downloaded from the
//! vendor's release. Kept apart from planning so the artifact's name, bundle
//! path and URLs stand in one place.
//!
//! Vault's API has two servers, HashiCorp's Vault and OpenBao; both are
//! installed by the same playbook, and [`VaultServer`] holds everything in
//! which they differ (binary, archive, unit, user, directories) as data.

use serde_json::{json, Value};

use super::Service;
use crate::inventory::VaultDistribution;
use crate::steps::release_files::{pinned_file, FileSpec, GITHUB};
use crate::versions;

/// How a release archive is packed: what the host unpacks it with (Python's
/// own modules: Ansible already needs Python there, unzip or tar may be missing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    Zip,
    TarGz,
}

impl ArchiveFormat {
    fn extension(self) -> &'static str {
        match self {
            ArchiveFormat::Zip => "zip",
            ArchiveFormat::TarGz => "tar.gz",
        }
    }

    /// The module of `python3 -m <module> -e ARCHIVE DIR`.
    fn python_module(self) -> &'static str {
        match self {
            ArchiveFormat::Zip => "zipfile",
            ArchiveFormat::TarGz => "tarfile",
        }
    }
}

/// A server that speaks Vault's API, as placed on a host of its own.
#[derive(Debug, Clone, Copy)]
pub struct VaultServer {
    /// As people call it in messages.
    pub title: &'static str,
    /// Its name on the host (the unit `<name>.service`, the system user and
    /// group, `<config_dir>/<name>.hcl`, the staging directory) and in the
    /// bundle (`<name>/<version>/...`).
    pub name: &'static str,
    /// The program in the release archive, installed as /usr/local/bin/<binary>.
    pub binary: &'static str,
    pub config_dir: &'static str,
    pub data_dir: &'static str,
    /// The unit's Description= and Documentation=, as upstream's unit has them.
    pub description: &'static str,
    pub documentation: &'static str,
    pub format: ArchiveFormat,
    /// Whether its configuration has `disable_mlock` (OpenBao removed mlock
    /// in 2.0 and warns about the field as unknown).
    pub mlock: bool,
    /// The release archive's file name for a version.
    archive: fn(&str) -> String,
    /// Where a version's files are published.
    release: fn(&str) -> String,
    /// The file, beside the archive, listing the release's sha256 sums.
    sums: fn(&str) -> String,
}

impl VaultServer {
    /// HashiCorp's Vault: the release zip and SHA256SUMS from releases.hashicorp.com.
    pub const VAULT: VaultServer = VaultServer {
        title: "Vault",
        name: "vault",
        binary: "vault",
        config_dir: "/etc/vault.d",
        data_dir: "/opt/vault/data",
        description: "HashiCorp Vault - A tool for managing secrets",
        documentation: "https://www.vaultproject.io/docs/",
        format: ArchiveFormat::Zip,
        mlock: true,
        archive: |v| format!("vault_{v}_linux_amd64.zip"),
        release: |v| format!("https://releases.hashicorp.com/vault/{v}"),
        sums: |v| format!("vault_{v}_SHA256SUMS"),
    };

    /// OpenBao: the tarball its release pipeline attaches to the GitHub release
    /// of tag `v<version>` (`openbao_<version>_linux_amd64.tar.gz`, `bao` at its
    /// root), with every asset's sum in `checksums.txt`. The names are its
    /// packages' (`openbao` user and unit, /etc/openbao/openbao.hcl,
    /// /opt/openbao/data); the binary goes to /usr/local/bin as Vault's does.
    pub const OPENBAO: VaultServer = VaultServer {
        title: "OpenBao",
        name: "openbao",
        binary: "bao",
        config_dir: "/etc/openbao",
        data_dir: "/opt/openbao/data",
        description: "OpenBao - A tool for managing secrets",
        documentation: "https://openbao.org/docs/",
        format: ArchiveFormat::TarGz,
        mlock: false,
        archive: |v| format!("openbao_{v}_linux_amd64.tar.gz"),
        release: |v| format!("{GITHUB}/openbao/openbao/releases/download/v{v}"),
        sums: |_| "checksums.txt".to_string(),
    };

    pub fn of(distribution: VaultDistribution) -> &'static VaultServer {
        match distribution {
            VaultDistribution::Vault => &Self::VAULT,
            VaultDistribution::Openbao => &Self::OPENBAO,
        }
    }

    /// The release archive of `version`, checked against the published sums.
    fn package(&self, version: &str) -> FileSpec {
        let name = (self.archive)(version);
        let release = (self.release)(version);
        FileSpec {
            sums_url: Some(format!("{release}/{}", (self.sums)(version))),
            sums_name: Some(name.clone()),
            ..pinned_file(
                &name,
                format!("{}/{version}/{name}", self.name),
                format!("{release}/{name}"),
                None,
            )
        }
    }

    /// What the playbook and its templates read (`vault_server.*`).
    pub(super) fn vars(&self) -> Value {
        json!({
            "title": self.title,
            "name": self.name,
            "binary": self.binary,
            "config_dir": self.config_dir,
            "data_dir": self.data_dir,
            "description": self.description,
            "documentation": self.documentation,
            "archive": format!("{}.{}", self.name, self.format.extension()),
            "unpack_module": self.format.python_module(),
            "mlock": self.mlock,
        })
    }
}

impl Service {
    /// Whose release it installs: the bundle directory and artifacts step
    /// (`artifacts/<name>/<version>`).
    pub(super) fn release_name(self, distribution: VaultDistribution) -> &'static str {
        match self {
            Service::Vault => VaultServer::of(distribution).name,
            Service::Gitlab => "gitlab",
        }
    }

    /// The release installed when the inventory names none.
    pub(super) fn default_version(self, distribution: VaultDistribution) -> &'static str {
        match self {
            Service::Vault => distribution.releases().default_release(),
            Service::Gitlab => versions::GITLAB,
        }
    }

    /// The one file it is installed from: in the bundle at
    /// `<name>/<version>/<file>`, online from the pinned release (Vault's
    /// and OpenBao's archives checked against their published sums; GitLab
    /// publishes no sums file for its packages).
    pub fn package(self, distribution: VaultDistribution, version: &str) -> FileSpec {
        match self {
            Service::Vault => VaultServer::of(distribution).package(version),
            Service::Gitlab => {
                let name = format!("gitlab-ce_{version}_amd64.deb");
                pinned_file(
                    &name,
                    format!("{}/{version}/{name}", self.release_name(distribution)),
                    format!("https://packages.gitlab.com/gitlab/gitlab-ce/packages/ubuntu/jammy/{name}/download.deb"),
                    None,
                )
            }
        }
    }
}
