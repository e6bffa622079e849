//! The versions we install when the inventory names none: one table, so an
//! upgrade of the defaults is one reviewed change. Each is overridable per
//! inventory (`components.<name>.version`, `virtualClusters[].version`).

/// Hierarchical Namespace Controller release (its `default.yaml` manifest).
pub const HNC: &str = "v1.0.0";
/// vcluster Helm chart (loft-sh/vcluster).
pub const VCLUSTER: &str = "0.10.1";
/// Where the vcluster chart is published.
pub const VCLUSTER_CHART_REPO: &str = "https://charts.loft.sh";

/// Vault installed on its own host (placement `host`): the release zip.
pub const VAULT: &str = "1.10.4";
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
