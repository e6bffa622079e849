//! The upstream releases the stack is made of: for each, its default
//! version (from the versions table), the file we apply and where it is
//! published. In air-gap mode the same file is read from
//! `<bundle>/<slug>/<version>/<file>`.

use crate::inventory::ClusterUsage;
use crate::versions;

/// Where a runtime release goes: every cluster (physical or virtual) whose
/// usage is one of `usage`, when the inventory configures
/// `components.<enabled_by>`.
#[derive(Debug, Clone, Copy)]
pub struct OnRuntimeClusters {
    pub usage: &'static [ClusterUsage],
    pub enabled_by: &'static str,
    /// Kinds the release ships that current Kubernetes no longer serves:
    /// skipped instead of failing the apply.
    pub removed_kinds: &'static [(&'static str, &'static str)],
}

const DEPLOYMENT: &[ClusterUsage] = &[ClusterUsage::Deployment];
const PIPELINE: &[ClusterUsage] = &[ClusterUsage::Pipeline];
const DEPLOYMENT_AND_PIPELINE: &[ClusterUsage] = &[ClusterUsage::Deployment, ClusterUsage::Pipeline];

/// Kinds Tekton 0.37 ships that Kubernetes 1.25 removed.
const TEKTON_REMOVED_KINDS: &[(&str, &str)] = &[
    ("policy/v1beta1", "PodSecurityPolicy"),
    ("autoscaling/v2beta1", "HorizontalPodAutoscaler"),
];

/// Every release, in the order the planner visits them.
pub const RELEASES: [&Release; 10] = [
    &CERT_MANAGER,
    &TRAEFIK,
    &ARGOCD,
    &ARGO_ROLLOUTS,
    &ARGO_EVENTS,
    &TEKTON,
    &TEKTON_DASHBOARD,
    &EXTERNAL_SECRETS,
    &VAULT_INJECTOR,
    &NAUTES,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// A plain multi-document manifest.
    Manifest,
    /// A packaged Helm chart, rendered with `helm template`.
    Chart { release: &'static str },
}

#[derive(Debug, Clone, Copy)]
pub struct Release {
    /// Inventory key under `components`.
    pub key: &'static str,
    pub title: &'static str,
    /// Names its steps (`stack/<slug>/<cluster>`) and its bundle directory.
    pub slug: &'static str,
    pub default_version: &'static str,
    pub namespace: &'static str,
    /// The release (by slug) whose set owns `namespace`, when this one only
    /// lives in it: an object has one owning set, so this release's step
    /// needs that one's instead of claiming the namespace too.
    pub namespace_of: Option<&'static str>,
    /// When the release is ready, from what its own controllers wait for:
    /// these workloads (kind, name in `namespace`) rolled out — Deployments
    /// available, StatefulSets ready — after every object of the release,
    /// webhook configurations included, was applied (see the apply engine:
    /// some become ready only once those exist). The step checks that the
    /// release renders each, so a renamed workload fails instead of going
    /// unnoticed; the engine waits for them with every other workload.
    pub ready: &'static [(&'static str, &'static str)],
    pub form: Form,
    /// Installed on runtime clusters by usage (the management cluster's
    /// components are placed by the planner, which configures them).
    pub on_runtime: Option<OnRuntimeClusters>,
    /// Installed on every cluster the release with this slug goes to, right
    /// after it, and enabled with it (a part with its own file, e.g. the
    /// Tekton Dashboard with Tekton).
    pub companion_of: Option<&'static str>,
    /// File name for a version (e.g. `traefik-10.24.0.tgz`).
    file: fn(&str) -> String,
    /// Download URL for a version; `{github}` is the GitHub base (or mirror).
    url: fn(&str, &str) -> String,
}

impl Release {
    pub fn file(&self, version: &str) -> String {
        (self.file)(version)
    }

    pub fn url(&self, github: &str, version: &str) -> String {
        (self.url)(github, version)
    }
}

pub const CERT_MANAGER: Release = Release {
    key: "certManager",
    title: "cert-manager",
    slug: "cert-manager",
    default_version: versions::CERT_MANAGER,
    namespace: "cert-manager",
    namespace_of: None,
    // cert-manager's own check (`cmctl check api`) needs the webhook to
    // answer, which needs cainjector to have filled its caBundle: all three.
    ready: &[
        ("Deployment", "cert-manager"),
        ("Deployment", "cert-manager-cainjector"),
        ("Deployment", "cert-manager-webhook"),
    ],
    form: Form::Manifest,
    on_runtime: None,
    companion_of: None,
    file: |_| "cert-manager.yaml".into(),
    url: |gh, v| format!("{gh}/cert-manager/cert-manager/releases/download/{v}/cert-manager.yaml"),
};

pub const TRAEFIK: Release = Release {
    key: "traefik",
    title: "Traefik",
    slug: "traefik",
    default_version: versions::TRAEFIK_CHART,
    namespace: "traefik",
    namespace_of: None,
    // The chart's one Deployment; its readiness probe is /ping on the
    // traefik entry point. It needs none of its CRDs' objects to be ready.
    ready: &[("Deployment", "traefik")],
    form: Form::Chart { release: "traefik" },
    on_runtime: None,
    companion_of: None,
    file: |v| format!("traefik-{v}.tgz"),
    url: |_, v| format!("https://traefik.github.io/charts/traefik/traefik-{v}.tgz"),
};

pub const ARGOCD: Release = Release {
    key: "argocd",
    title: "Argo CD",
    slug: "argocd",
    default_version: versions::ARGOCD,
    namespace: "argocd",
    namespace_of: None,
    // Every component of install.yaml: the application controller is a
    // StatefulSet; Dex, Redis, the repo server and the API server must run
    // for an Application to sync (which the health step then checks).
    ready: &[
        ("Deployment", "argocd-server"),
        ("Deployment", "argocd-repo-server"),
        ("Deployment", "argocd-redis"),
        ("Deployment", "argocd-dex-server"),
        ("Deployment", "argocd-applicationset-controller"),
        ("Deployment", "argocd-notifications-controller"),
        ("StatefulSet", "argocd-application-controller"),
    ],
    form: Form::Manifest,
    on_runtime: Some(OnRuntimeClusters {
        usage: DEPLOYMENT,
        enabled_by: "argocd",
        removed_kinds: &[],
    }),
    companion_of: None,
    file: |_| "install.yaml".into(),
    url: |gh, v| format!("{gh}/argoproj/argo-cd/releases/download/{v}/install.yaml"),
};

pub const ARGO_ROLLOUTS: Release = Release {
    key: "argoRollouts",
    title: "Argo Rollouts",
    slug: "argo-rollouts",
    default_version: versions::ARGO_ROLLOUTS,
    namespace: "argo-rollouts",
    namespace_of: None,
    // One controller; it serves no admission webhook.
    ready: &[("Deployment", "argo-rollouts")],
    form: Form::Manifest,
    on_runtime: Some(OnRuntimeClusters {
        usage: DEPLOYMENT,
        enabled_by: "argoRollouts",
        removed_kinds: &[],
    }),
    companion_of: None,
    file: |_| "install.yaml".into(),
    url: |gh, v| format!("{gh}/argoproj/argo-rollouts/releases/download/{v}/install.yaml"),
};

pub const ARGO_EVENTS: Release = Release {
    key: "argoEvents",
    title: "Argo Events",
    slug: "argo-events",
    default_version: versions::ARGO_EVENTS,
    namespace: "argo-events",
    namespace_of: None,
    // 1.7's single controller-manager (EventBus, EventSource, Sensor); its
    // validating webhook is a separate, optional install we do not apply.
    ready: &[("Deployment", "controller-manager")],
    form: Form::Manifest,
    on_runtime: Some(OnRuntimeClusters {
        usage: PIPELINE,
        enabled_by: "argoEvents",
        removed_kinds: &[],
    }),
    companion_of: None,
    file: |_| "install.yaml".into(),
    url: |gh, v| format!("{gh}/argoproj/argo-events/releases/download/{v}/install.yaml"),
};

pub const TEKTON: Release = Release {
    key: "tekton",
    title: "Tekton Pipelines",
    slug: "tekton",
    default_version: versions::TEKTON_PIPELINES,
    namespace: "tekton-pipelines",
    namespace_of: None,
    // The controller, and the webhook that admits (and defaults) every
    // Tekton object: Tasks and Pipelines can be created only once it runs.
    ready: &[
        ("Deployment", "tekton-pipelines-controller"),
        ("Deployment", "tekton-pipelines-webhook"),
    ],
    form: Form::Manifest,
    on_runtime: Some(OnRuntimeClusters {
        usage: PIPELINE,
        enabled_by: "tekton",
        removed_kinds: TEKTON_REMOVED_KINDS,
    }),
    companion_of: None,
    file: |_| "release.yaml".into(),
    url: |_, v| format!("https://storage.googleapis.com/tekton-releases/pipeline/previous/{v}/release.yaml"),
};

pub const TEKTON_DASHBOARD: Release = Release {
    key: "tektonDashboard",
    title: "Tekton Dashboard",
    slug: "tekton-dashboard",
    default_version: versions::TEKTON_DASHBOARD,
    namespace: "tekton-pipelines",
    // The dashboard release carries no Namespace: it is Tekton Pipelines'.
    namespace_of: Some("tekton"),
    // Its one Deployment, in Tekton's namespace.
    ready: &[("Deployment", "tekton-dashboard")],
    form: Form::Manifest,
    on_runtime: None,
    companion_of: Some("tekton"),
    file: |_| "tekton-dashboard-release.yaml".into(),
    url: |_, v| {
        format!("https://storage.googleapis.com/tekton-releases/dashboard/previous/{v}/tekton-dashboard-release.yaml")
    },
};

pub const EXTERNAL_SECRETS: Release = Release {
    key: "externalSecrets",
    title: "External Secrets",
    slug: "external-secrets",
    default_version: versions::EXTERNAL_SECRETS_CHART,
    namespace: "external-secrets",
    namespace_of: None,
    // The operator, the webhook and the cert-controller, whose /readyz
    // passes only once it has injected its CA into the CRDs and the
    // ValidatingWebhookConfigurations labelled external-secrets.io/
    // component=webhook, and the webhook Service has endpoints.
    ready: &[
        ("Deployment", "external-secrets"),
        ("Deployment", "external-secrets-cert-controller"),
        ("Deployment", "external-secrets-webhook"),
    ],
    form: Form::Chart {
        release: "external-secrets",
    },
    on_runtime: Some(OnRuntimeClusters {
        usage: DEPLOYMENT_AND_PIPELINE,
        enabled_by: "externalSecrets",
        removed_kinds: &[],
    }),
    companion_of: None,
    file: |v| format!("external-secrets-{v}.tgz"),
    url: |gh, v| {
        format!("{gh}/external-secrets/external-secrets/releases/download/helm-chart-{v}/external-secrets-{v}.tgz")
    },
};

/// HashiCorp's chart, used for the Vault agent injector only.
pub const VAULT_INJECTOR: Release = Release {
    key: "vaultInjector",
    title: "Vault agent injector",
    slug: "vault-injector",
    default_version: versions::VAULT_CHART,
    namespace: "vault",
    namespace_of: None,
    // vault-k8s 1.0.0 with auto-TLS: its certificate, and so its HTTPS
    // /health/ready probe, comes only once its MutatingWebhookConfiguration
    // (vault-agent-injector-cfg) exists for it to patch.
    ready: &[("Deployment", "vault-agent-injector")],
    form: Form::Chart { release: "vault" },
    on_runtime: Some(OnRuntimeClusters {
        usage: DEPLOYMENT_AND_PIPELINE,
        enabled_by: "vault",
        removed_kinds: &[],
    }),
    companion_of: None,
    file: |v| format!("vault-{v}.tgz"),
    url: |_, v| format!("https://helm.releases.hashicorp.com/vault-{v}.tgz"),
};

/// The Nautes release manifest (CRDs, API server, operators), committed to
/// the tenant repository and delivered from there by Argo CD.
pub const NAUTES: Release = Release {
    key: "nautes",
    title: "Nautes",
    slug: "nautes",
    default_version: versions::NAUTES,
    namespace: "nautes",
    namespace_of: None,
    // Delivered by Argo CD, not applied by us: ready is its Application
    // Synced and Healthy, which the health step waits for.
    ready: &[],
    form: Form::Manifest,
    on_runtime: None,
    companion_of: None,
    file: |_| "nautes.yaml".into(),
    url: |gh, v| format!("{gh}/nautes-labs/nautes/releases/download/{v}/nautes.yaml"),
};
