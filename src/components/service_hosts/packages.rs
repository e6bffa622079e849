//! The one file each service is installed from, and which release that is:
//! the pinned version unless the inventory names another, found in the
//! air-gap bundle at `<service>/<version>/<name>` or downloaded from the
//! vendor's release. Kept apart from planning so the artifact's name, bundle
//! path and URLs stand in one place.

use super::Service;
use crate::components::artifacts::{pinned_file, FileSpec};
use crate::versions;

impl Service {
    pub(super) fn default_version(self) -> &'static str {
        match self {
            Service::Vault => versions::VAULT,
            Service::Gitlab => versions::GITLAB,
        }
    }

    /// The one file it is installed from: in the bundle at
    /// `<service>/<version>/<name>`, online from the pinned release (the
    /// Vault zip checked against HashiCorp's published SHA256SUMS; GitLab
    /// publishes no sums file for its packages).
    pub fn package(self, version: &str) -> FileSpec {
        match self {
            Service::Vault => {
                let name = format!("vault_{version}_linux_amd64.zip");
                let release = format!("https://releases.hashicorp.com/vault/{version}");
                FileSpec {
                    sums_url: Some(format!("{release}/vault_{version}_SHA256SUMS")),
                    sums_name: Some(name.clone()),
                    ..pinned_file(
                        &name,
                        format!("vault/{version}/{name}"),
                        format!("{release}/{name}"),
                        None,
                    )
                }
            }
            Service::Gitlab => {
                let name = format!("gitlab-ce_{version}_amd64.deb");
                pinned_file(
                    &name,
                    format!("gitlab/{version}/{name}"),
                    format!("https://packages.gitlab.com/gitlab/gitlab-ce/packages/ubuntu/jammy/{name}/download.deb"),
                    None,
                )
            }
        }
    }
}
