//! The versions we install when the inventory names none: one table, so an
//! upgrade of the defaults is one reviewed change. Each is overridable per
//! inventory (`components.<name>.version`, `virtualClusters[].version`).

/// Hierarchical Namespace Controller release (its `default.yaml` manifest).
pub const HNC: &str = "v1.0.0";
/// vcluster Helm chart (loft-sh/vcluster).
pub const VCLUSTER: &str = "0.10.1";
/// Where the vcluster chart is published.
pub const VCLUSTER_CHART_REPO: &str = "https://charts.loft.sh";

/// The rest of the stack (installed by later components).
pub const TRAEFIK_CHART: &str = "10.24.0";
pub const CERT_MANAGER: &str = "v1.8.0";
pub const ARGOCD: &str = "v2.4.0";
pub const DEX: &str = "v2.32.0";
pub const ARGO_ROLLOUTS: &str = "v1.2.1";
pub const ARGO_EVENTS: &str = "v1.7.1";
pub const TEKTON_PIPELINES: &str = "v0.37.5";
pub const EXTERNAL_SECRETS: &str = "v0.5.7";
