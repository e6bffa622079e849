//! The upstream releases of what this installer puts on hosts and of the
//! vcluster chart: for each, the one it installs when the inventory names
//! none (the first) and the others it has been made to install. The stack's
//! components keep theirs in their catalog entries (`crate::catalog`). So
//! `validate` can refuse a release nobody here has seen before `apply`
//! downloads or looks for it. A leaf module: the inventory checks against it,
//! the components install from it, and it depends on neither.

/// vcluster Helm chart (loft-sh/vcluster).
pub const VCLUSTER: &str = "0.10.1";
/// Where the vcluster chart is published.
pub const VCLUSTER_CHART_REPO: &str = "https://charts.loft.sh";

/// Vault installed on its own host (placement `host`): the release zip.
pub const VAULT: &str = "1.10.4";
/// OpenBao, Vault's open-source fork with the same HTTP API, installed on
/// its own host instead (`distribution: openbao`): the release tarball.
pub const OPENBAO: &str = "2.7.2";
/// GitLab CE installed on its own host (placement `host`): the Omnibus .deb.
pub const GITLAB: &str = "15.10.8-ce.0";

/// The releases of one component an inventory may ask for.
#[derive(Debug, Clone, Copy)]
pub struct Known {
    /// As people call it in messages.
    pub title: &'static str,
    /// The default first, then the others in release order.
    pub releases: &'static [&'static str],
}

impl Known {
    pub fn default_release(&self) -> &'static str {
        self.releases[0]
    }

    pub fn has(&self, version: &str) -> bool {
        self.releases.contains(&version)
    }
}

// Besides each default, only releases whose installation was worked out:
// vcluster 0.10.2 is its chart's bug-fix release; GitLab 15.11 is the
// required stop after 15.10 and 16.3 the release from which Omnibus has no
// Grafana (the GitLab playbook leaves its settings out from there on).
const VCLUSTER_RELEASES: &[&str] = &[VCLUSTER, "0.10.2"];
pub const GITLAB_RELEASES: &[&str] = &[GITLAB, "15.11.13-ce.0", "16.3.0-ce.0"];

/// The Vault server releases (the default distribution).
pub const VAULT_SERVER: Known = Known {
    title: "Vault",
    releases: &[VAULT],
};

/// The OpenBao server releases (`distribution: openbao`).
pub const OPENBAO_SERVER: Known = Known {
    title: "OpenBao",
    releases: &[OPENBAO],
};

/// What `virtualClusters[].version` may name: the vcluster chart.
pub const VCLUSTER_CHART: Known = Known {
    title: "the vcluster chart",
    releases: VCLUSTER_RELEASES,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_default_is_the_first_known_release() {
        // The stack components' defaults are checked in crate::catalog.
        assert_eq!(VAULT_SERVER.default_release(), VAULT);
        assert_eq!(GITLAB_RELEASES[0], GITLAB);
        assert_eq!(VCLUSTER_CHART.default_release(), VCLUSTER);
        assert_eq!(OPENBAO_SERVER.default_release(), OPENBAO);
        assert!(!OPENBAO_SERVER.has(VAULT) && !VAULT_SERVER.has(OPENBAO));
    }
}
