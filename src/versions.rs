//! The upstream releases this installer knows: for each component, the one it
//! installs when the inventory names none (the first) and the others it has
//! been made to install — their file names, chart values and upgrade steps.
//! One table, so an upgrade of the defaults is one reviewed change, and so
//! `validate` can refuse a release nobody here has seen before `apply`
//! downloads or looks for it. A leaf module: the inventory checks against it,
//! the components install from it, and it depends on neither.

/// Hierarchical Namespace Controller release (its `default.yaml` manifest).
pub const HNC: &str = "v1.0.0";
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

/// The rest of the stack (installed by later components).
pub const TRAEFIK_CHART: &str = "10.24.0";
pub const CERT_MANAGER: &str = "v1.8.0";
pub const ARGOCD: &str = "v2.4.0";
pub const DEX: &str = "v2.32.0";
pub const ARGO_ROLLOUTS: &str = "v1.2.1";
pub const ARGO_EVENTS: &str = "v1.7.1";
pub const TEKTON_PIPELINES: &str = "v0.37.5";
/// External Secrets Helm chart (app v0.5.7).
pub const EXTERNAL_SECRETS_CHART: &str = "0.5.7";
pub const TEKTON_DASHBOARD: &str = "v0.28.0";
/// HashiCorp's Vault chart, for the agent injector on runtime clusters (Vault 1.11).
pub const VAULT_CHART: &str = "0.22.0";
/// oauth2-proxy (where the inventory asks for it).
pub const OAUTH2_PROXY: &str = "v7.3.0";
/// The Nautes release (CRDs, API server, operators).
pub const NAUTES: &str = "v0.3.8";

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
// cert-manager's patch releases of 1.8 change no manifest shape; vcluster
// 0.10.2 is its chart's bug-fix release; GitLab 15.11 is the required stop
// after 15.10 and 16.3 the release from which Omnibus has no Grafana (the
// GitLab playbook leaves its settings out from there on).
const CERT_MANAGER_RELEASES: &[&str] = &[CERT_MANAGER, "v1.8.1", "v1.8.2"];
const VCLUSTER_RELEASES: &[&str] = &[VCLUSTER, "0.10.2"];
const GITLAB_RELEASES: &[&str] = &[GITLAB, "15.11.13-ce.0", "16.3.0-ce.0"];

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

/// What `components.<key>.version` may name, by inventory key. Vault's is
/// the server release installed on a host (Vault's own here; with
/// `distribution: openbao` the inventory checks against `OPENBAO_SERVER`);
/// in a cluster only its agent injector runs, whose chart is pinned.
/// Nautes' table: Harbor, Nexus OSS and SonarQube (configured through their APIs).
pub const HARBOR: &str = "2.5.1";
pub const NEXUS: &str = "3.39.0";
pub const SONARQUBE: &str = "9.5";

pub fn of_component(key: &str) -> Option<Known> {
    let (title, releases): (&str, &'static [&'static str]) = match key {
        "certManager" => ("cert-manager", CERT_MANAGER_RELEASES),
        "traefik" => ("the Traefik chart", &[TRAEFIK_CHART]),
        "vault" => return Some(VAULT_SERVER),
        "gitlab" => ("GitLab CE", GITLAB_RELEASES),
        "dex" => ("Dex", &[DEX]),
        "argocd" => ("Argo CD", &[ARGOCD]),
        "argoRollouts" => ("Argo Rollouts", &[ARGO_ROLLOUTS]),
        "argoEvents" => ("Argo Events", &[ARGO_EVENTS]),
        "tekton" => ("Tekton Pipelines", &[TEKTON_PIPELINES]),
        "externalSecrets" => ("the External Secrets chart", &[EXTERNAL_SECRETS_CHART]),
        "hnc" => ("HNC", &[HNC]),
        "oauth2Proxy" => ("oauth2-proxy", &[OAUTH2_PROXY]),
        "nautes" => ("Nautes", &[NAUTES]),
        "harbor" => ("Harbor", &[HARBOR]),
        "nexus" => ("Nexus", &[NEXUS]),
        "sonarqube" => ("SonarQube", &[SONARQUBE]),
        _ => return None,
    };
    Some(Known { title, releases })
}

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
        for (key, default) in [
            ("certManager", CERT_MANAGER),
            ("traefik", TRAEFIK_CHART),
            ("vault", VAULT),
            ("gitlab", GITLAB),
            ("hnc", HNC),
            ("nautes", NAUTES),
        ] {
            assert_eq!(of_component(key).unwrap().default_release(), default, "{key}");
        }
        assert_eq!(VCLUSTER_CHART.default_release(), VCLUSTER);
        assert_eq!(OPENBAO_SERVER.default_release(), OPENBAO);
        assert!(!OPENBAO_SERVER.has(VAULT) && !VAULT_SERVER.has(OPENBAO));
        assert!(of_component("certManager").unwrap().has("v1.8.1"));
        assert!(!of_component("certManager").unwrap().has("v1.9.0"));
        assert!(of_component("grafana").is_none());
    }
}
