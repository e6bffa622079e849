//! The catalog's entries: one `Component` per inventory key, with the
//! releases the stack applies for it. `COMPONENTS` is in the order the
//! planner visits them (and the health step lists their endpoints).
//!
//! To add a chart- or manifest-based component: write its `Component` (and
//! its `Release`s) here and list it in `COMPONENTS`. Validation, the JSON
//! schema, the planner (placement, needs, values, readiness), Dex's client
//! list and the health step take it from there. Only run-time
//! configuration (objects built from what earlier steps made) needs code,
//! under `components/stack/runtime`.

use super::{
    ClusterUsage, Component, Expect, Form, Health, Output, OutputAt, Place, Release, SignIn, Subdomain, Values,
};
use crate::versions::{self, Known};

/// Every component, in the order the planner visits them.
pub const COMPONENTS: [&Component; 16] = [
    &TRAEFIK,
    &CERT_MANAGER,
    &GITLAB,
    &DEX,
    &ARGOCD,
    &ARGO_ROLLOUTS,
    &ARGO_EVENTS,
    &TEKTON,
    &EXTERNAL_SECRETS,
    &VAULT,
    &HNC,
    &OAUTH2_PROXY,
    &NAUTES,
    &HARBOR,
    &NEXUS,
    &SONARQUBE,
];

const DEPLOYMENT: &[ClusterUsage] = &[ClusterUsage::Deployment];
const PIPELINE: &[ClusterUsage] = &[ClusterUsage::Pipeline];
const DEPLOYMENT_AND_PIPELINE: &[ClusterUsage] = &[ClusterUsage::Deployment, ClusterUsage::Pipeline];

/// A component with nothing but its key and releases set.
const BASE: Component = Component {
    key: "",
    slug: "",
    about: "",
    versions: Known {
        title: "",
        releases: &[],
    },
    needs: &[],
    on_host: false,
    subdomain: None,
    sign_in: None,
    health: None,
    outputs: &[],
    releases: &[],
};

/// A release placed nowhere yet, of no file.
const RELEASE: Release = Release {
    title: "",
    slug: "",
    pinned: None,
    namespace: "",
    namespace_of: None,
    ready: &[],
    form: Form::Manifest,
    place: Place::Management,
    values: Values::User,
    removed_kinds: &[],
    file: |_| String::new(),
    url: |_, _| String::new(),
};

pub const CERT_MANAGER: Component = Component {
    key: "certManager",
    slug: "cert-manager",
    about: "cert-manager on the management cluster, with a ClusterIssuer on our CA.",
    // Besides the default, only releases whose installation was worked out:
    // cert-manager's patch releases of 1.8 change no manifest shape.
    versions: Known {
        title: "cert-manager",
        releases: &["v1.8.0", "v1.8.1", "v1.8.2"],
    },
    releases: &[&CERT_MANAGER_RELEASE],
    ..BASE
};

pub const CERT_MANAGER_RELEASE: Release = Release {
    title: "cert-manager",
    slug: "cert-manager",
    namespace: "cert-manager",
    // cert-manager's own check (`cmctl check api`) needs the webhook to
    // answer, which needs cainjector to have filled its caBundle: all three.
    ready: &[
        ("Deployment", "cert-manager"),
        ("Deployment", "cert-manager-cainjector"),
        ("Deployment", "cert-manager-webhook"),
    ],
    place: Place::Management,
    file: |_| "cert-manager.yaml".into(),
    url: |gh, v| format!("{gh}/cert-manager/cert-manager/releases/download/{v}/cert-manager.yaml"),
    ..RELEASE
};

pub const TRAEFIK: Component = Component {
    key: "traefik",
    slug: "traefik",
    about: "Traefik on the ingress cluster, serving our wildcard certificate.",
    versions: Known {
        title: "the Traefik chart",
        releases: &["10.24.0"],
    },
    releases: &[&TRAEFIK_RELEASE],
    ..BASE
};

pub const TRAEFIK_RELEASE: Release = Release {
    title: "Traefik",
    slug: "traefik",
    namespace: "traefik",
    // The chart's one Deployment; its readiness probe is /ping on the
    // traefik entry point. It needs none of its CRDs' objects to be ready.
    ready: &[("Deployment", "traefik")],
    form: Form::Chart { release: "traefik" },
    place: Place::Ingress,
    // Its NodePorts come from our own keys among its values.
    values: Values::Planned,
    file: |v| format!("traefik-{v}.tgz"),
    url: |_, v| format!("https://traefik.github.io/charts/traefik/traefik-{v}.tgz"),
    ..RELEASE
};

pub const VAULT: Component = Component {
    key: "vault",
    slug: "vault",
    about: "Vault (or OpenBao): on a host, brought by you, or in a cluster as the agent injector only.",
    versions: versions::VAULT_SERVER,
    on_host: true,
    releases: &[&VAULT_INJECTOR],
    ..BASE
};

/// HashiCorp's chart, used for the Vault agent injector only.
pub const VAULT_INJECTOR: Release = Release {
    title: "Vault agent injector",
    slug: "vault-injector",
    // HashiCorp's Vault chart (Vault 1.11), whatever server the inventory runs.
    pinned: Some("0.22.0"),
    namespace: "vault",
    // vault-k8s 1.0.0 with auto-TLS: its certificate, and so its HTTPS
    // /health/ready probe, comes only once its MutatingWebhookConfiguration
    // (vault-agent-injector-cfg) exists for it to patch.
    ready: &[("Deployment", "vault-agent-injector")],
    form: Form::Chart { release: "vault" },
    place: Place::Runtime {
        usage: DEPLOYMENT_AND_PIPELINE,
        management: false,
    },
    // The injector alone, pointed at the inventory's Vault.
    values: Values::Planned,
    file: |v| format!("vault-{v}.tgz"),
    url: |_, v| format!("https://helm.releases.hashicorp.com/vault-{v}.tgz"),
    ..RELEASE
};

pub const GITLAB: Component = Component {
    key: "gitlab",
    slug: "gitlab",
    about: "GitLab CE: on a host or brought by you; holds the tenant repository.",
    // 15.11 is the required stop after 15.10 and 16.3 the release from
    // which Omnibus has no Grafana (the GitLab playbook leaves its settings
    // out from there on).
    versions: Known {
        title: "GitLab CE",
        releases: versions::GITLAB_RELEASES,
    },
    on_host: true,
    subdomain: Some(Subdomain::new("gitlab")),
    ..BASE
};

pub const DEX: Component = Component {
    key: "dex",
    slug: "dex",
    about: "Dex, the sign-in every other component trusts, through GitLab.",
    versions: Known {
        title: "Dex",
        releases: &["v2.32.0"],
    },
    // Dex signs users in through GitLab.
    needs: &["gitlab"],
    subdomain: Some(Subdomain::new("dex")),
    health: Some(Health {
        name: "Dex",
        path: "/.well-known/openid-configuration",
        expect: Expect::Issuer,
    }),
    outputs: &[Output {
        name: "issuer",
        at: OutputAt::Url(""),
    }],
    ..BASE
};

pub const ARGOCD: Component = Component {
    key: "argocd",
    slug: "argocd",
    about: "Argo CD: on the management cluster (delivering Nautes) and on deployment clusters.",
    versions: Known {
        title: "Argo CD",
        releases: &["v2.4.0"],
    },
    // Argo CD's sign-in is Dex's.
    needs: &["dex"],
    subdomain: Some(Subdomain::new("argocd")),
    sign_in: Some(SignIn {
        client_id: "argocd",
        name: "Argo CD",
        callback_path: "/auth/callback",
        secret_file: "argocd/dex-client-secret",
        without_dex: false,
    }),
    health: Some(Health {
        name: "Argo CD",
        path: "/healthz",
        expect: Expect::Ok,
    }),
    outputs: &[Output {
        name: "web UI",
        at: OutputAt::Url("/"),
    }],
    releases: &[&ARGOCD_RELEASE],
    ..BASE
};

pub const ARGOCD_RELEASE: Release = Release {
    title: "Argo CD",
    slug: "argocd",
    namespace: "argocd",
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
    place: Place::Runtime {
        usage: DEPLOYMENT,
        management: true,
    },
    file: |_| "install.yaml".into(),
    url: |gh, v| format!("{gh}/argoproj/argo-cd/releases/download/{v}/install.yaml"),
    ..RELEASE
};

pub const ARGO_ROLLOUTS: Component = Component {
    key: "argoRollouts",
    slug: "argo-rollouts",
    about: "Argo Rollouts on deployment clusters.",
    versions: Known {
        title: "Argo Rollouts",
        releases: &["v1.2.1"],
    },
    releases: &[&ARGO_ROLLOUTS_RELEASE],
    ..BASE
};

pub const ARGO_ROLLOUTS_RELEASE: Release = Release {
    title: "Argo Rollouts",
    slug: "argo-rollouts",
    namespace: "argo-rollouts",
    // One controller; it serves no admission webhook.
    ready: &[("Deployment", "argo-rollouts")],
    place: Place::Runtime {
        usage: DEPLOYMENT,
        management: false,
    },
    file: |_| "install.yaml".into(),
    url: |gh, v| format!("{gh}/argoproj/argo-rollouts/releases/download/{v}/install.yaml"),
    ..RELEASE
};

pub const ARGO_EVENTS: Component = Component {
    key: "argoEvents",
    slug: "argo-events",
    about: "Argo Events on pipeline clusters.",
    versions: Known {
        title: "Argo Events",
        releases: &["v1.7.1"],
    },
    releases: &[&ARGO_EVENTS_RELEASE],
    ..BASE
};

pub const ARGO_EVENTS_RELEASE: Release = Release {
    title: "Argo Events",
    slug: "argo-events",
    namespace: "argo-events",
    // 1.7's single controller-manager (EventBus, EventSource, Sensor); its
    // validating webhook is a separate, optional install we do not apply.
    ready: &[("Deployment", "controller-manager")],
    place: Place::Runtime {
        usage: PIPELINE,
        management: false,
    },
    file: |_| "install.yaml".into(),
    url: |gh, v| format!("{gh}/argoproj/argo-events/releases/download/{v}/install.yaml"),
    ..RELEASE
};

pub const TEKTON: Component = Component {
    key: "tekton",
    slug: "tekton",
    about: "Tekton Pipelines and its Dashboard on pipeline clusters.",
    versions: Known {
        title: "Tekton Pipelines",
        releases: &["v0.37.5"],
    },
    releases: &[&TEKTON_RELEASE, &TEKTON_DASHBOARD],
    ..BASE
};

/// Kinds Tekton 0.37 ships that Kubernetes 1.25 removed.
const TEKTON_REMOVED_KINDS: &[(&str, &str)] = &[
    ("policy/v1beta1", "PodSecurityPolicy"),
    ("autoscaling/v2beta1", "HorizontalPodAutoscaler"),
];

pub const TEKTON_RELEASE: Release = Release {
    title: "Tekton Pipelines",
    slug: "tekton",
    namespace: "tekton-pipelines",
    // The controller, and the webhook that admits (and defaults) every
    // Tekton object: Tasks and Pipelines can be created only once it runs.
    ready: &[
        ("Deployment", "tekton-pipelines-controller"),
        ("Deployment", "tekton-pipelines-webhook"),
    ],
    place: Place::Runtime {
        usage: PIPELINE,
        management: false,
    },
    removed_kinds: TEKTON_REMOVED_KINDS,
    file: |_| "release.yaml".into(),
    url: |_, v| format!("https://storage.googleapis.com/tekton-releases/pipeline/previous/{v}/release.yaml"),
    ..RELEASE
};

/// The Tekton Dashboard: everything about it is this entry (and its line in
/// `TEKTON.releases`).
pub const TEKTON_DASHBOARD: Release = Release {
    title: "Tekton Dashboard",
    slug: "tekton-dashboard",
    pinned: Some("v0.28.0"),
    namespace: "tekton-pipelines",
    // The dashboard release carries no Namespace: it is Tekton Pipelines'.
    namespace_of: Some("tekton"),
    // Its one Deployment, in Tekton's namespace.
    ready: &[("Deployment", "tekton-dashboard")],
    place: Place::With("tekton"),
    file: |_| "tekton-dashboard-release.yaml".into(),
    url: |_, v| {
        format!("https://storage.googleapis.com/tekton-releases/dashboard/previous/{v}/tekton-dashboard-release.yaml")
    },
    ..RELEASE
};

pub const EXTERNAL_SECRETS: Component = Component {
    key: "externalSecrets",
    slug: "external-secrets",
    about: "External Secrets on deployment and pipeline clusters.",
    versions: Known {
        title: "the External Secrets chart",
        // The chart of app v0.5.7.
        releases: &["0.5.7"],
    },
    releases: &[&EXTERNAL_SECRETS_RELEASE],
    ..BASE
};

pub const EXTERNAL_SECRETS_RELEASE: Release = Release {
    title: "External Secrets",
    slug: "external-secrets",
    namespace: "external-secrets",
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
    place: Place::Runtime {
        usage: DEPLOYMENT_AND_PIPELINE,
        management: false,
    },
    file: |v| format!("external-secrets-{v}.tgz"),
    url: |gh, v| {
        format!("{gh}/external-secrets/external-secrets/releases/download/helm-chart-{v}/external-secrets-{v}.tgz")
    },
    ..RELEASE
};

pub const HNC: Component = Component {
    key: "hnc",
    slug: "hnc",
    about: "The Hierarchical Namespace Controller, for tenants' namespace trees (its `default.yaml`).",
    versions: Known {
        title: "HNC",
        releases: &["v1.0.0"],
    },
    ..BASE
};

pub const OAUTH2_PROXY: Component = Component {
    key: "oauth2Proxy",
    slug: "oauth2-proxy",
    about: "oauth2-proxy behind Traefik: sign-in through Dex for UIs without their own.",
    versions: Known {
        title: "oauth2-proxy",
        releases: &["v7.3.0"],
    },
    // oauth2-proxy signs users in through Dex.
    needs: &["dex"],
    subdomain: Some(Subdomain::new("auth")),
    sign_in: Some(SignIn {
        client_id: "oauth2-proxy",
        name: "oauth2-proxy",
        callback_path: "/oauth2/callback",
        secret_file: "oauth2-proxy/dex-client-secret",
        without_dex: false,
    }),
    health: Some(Health {
        name: "oauth2-proxy",
        path: "/ping",
        expect: Expect::Ok,
    }),
    outputs: &[
        Output {
            name: "sign-in",
            at: OutputAt::Url("/oauth2/sign_in"),
        },
        Output {
            name: "cookie secret",
            at: OutputAt::File("oauth2-proxy/cookie-secret"),
        },
    ],
    ..BASE
};

pub const NAUTES: Component = Component {
    key: "nautes",
    slug: "nautes",
    about: "The Nautes CRDs, API server and operators.",
    versions: Known {
        title: "Nautes",
        releases: &["v0.3.8"],
    },
    // Nautes' operators keep secrets in Vault, read GitLab and deploy with Argo CD.
    needs: &["vault", "gitlab", "argocd"],
    // The API server, unless `components.nautes.values.apiHost` names another.
    subdomain: Some(Subdomain::new("api")),
    health: Some(Health {
        name: "Nautes API server",
        path: "/healthz",
        expect: Expect::Answers,
    }),
    outputs: &[Output {
        name: "API server",
        at: OutputAt::Url("/"),
    }],
    releases: &[&NAUTES_RELEASE],
    ..BASE
};

/// The Nautes release manifest (CRDs, API server, operators), committed to
/// the tenant repository and delivered from there by Argo CD.
pub const NAUTES_RELEASE: Release = Release {
    title: "Nautes",
    slug: "nautes",
    namespace: "nautes",
    // Delivered by Argo CD, not applied by us: ready is its Application
    // Synced and Healthy, which the health step waits for.
    ready: &[],
    place: Place::Delivered,
    file: |_| "nautes.yaml".into(),
    url: |gh, v| format!("{gh}/nautes-labs/nautes/releases/download/{v}/nautes.yaml"),
    ..RELEASE
};

/// The shared Harbor: installed in a cluster (`placement: cluster`, the
/// chart below) or yours (`placement: external`); either way configured
/// through its API (`components/registries`). Harbor has accounts of its
/// own: it signs in through Dex (`oidc_auth`) only when Dex is installed,
/// its callback below each instance's own URL (`harbor.<domain>` when
/// installed here).
pub const HARBOR: Component = Component {
    key: "harbor",
    slug: "harbor",
    about: "Harbor, installed in a cluster (placement cluster, at harbor.<domain>) or yours (placement external), \
            configured through its API: admin password, tenants' projects and robots.",
    versions: Known {
        title: "Harbor",
        releases: &["2.5.1"],
    },
    subdomain: Some(Subdomain::new("harbor")),
    sign_in: Some(SignIn {
        client_id: "harbor",
        name: "Harbor",
        callback_path: "/c/oidc/callback",
        secret_file: "harbor/dex-client-secret",
        without_dex: true,
    }),
    health: Some(Health {
        name: "Harbor",
        path: "/api/v2.0/ping",
        expect: Expect::Ok,
    }),
    releases: &[&HARBOR_RELEASE],
    outputs: &[Output {
        name: "web UI",
        at: OutputAt::Url("/"),
    }],
    ..BASE
};

/// goharbor/harbor-helm 1.9.1, whose appVersion is Harbor 2.5.1.
pub const HARBOR_RELEASE: Release = Release {
    title: "Harbor",
    slug: "harbor",
    pinned: Some("1.9.1"),
    namespace: "harbor",
    // With the values we plan (Notary, ChartMuseum and Trivy off, the
    // internal database and Redis, exposed through an Ingress): core,
    // jobservice, portal and registry Deployments, the database and Redis
    // StatefulSets. Core's readiness probe is /api/v2.0/ping.
    ready: &[
        ("Deployment", "harbor-core"),
        ("Deployment", "harbor-jobservice"),
        ("Deployment", "harbor-portal"),
        ("Deployment", "harbor-registry"),
        ("StatefulSet", "harbor-database"),
        ("StatefulSet", "harbor-redis"),
    ],
    form: Form::Chart { release: "harbor" },
    place: Place::Management,
    // Its host name, storage and switches from the inventory; its secrets
    // are objects of ours merged over the chart's (components/registries/install.rs).
    values: Values::Planned,
    file: |v| format!("harbor-{v}.tgz"),
    url: |_, v| format!("https://helm.goharbor.io/harbor-{v}.tgz"),
    ..RELEASE
};

pub const NEXUS: Component = Component {
    key: "nexus",
    slug: "nexus",
    about: "Nexus OSS, installed in a cluster (placement cluster, at nexus.<domain>) or yours (placement external), \
            configured through its API: admin password, anonymous access (`values.anonymous`), tenants' \
            repositories, roles and users.",
    versions: Known {
        title: "Nexus",
        releases: &["3.39.0"],
    },
    subdomain: Some(Subdomain::new("nexus")),
    health: Some(Health {
        name: "Nexus",
        path: "/service/rest/v1/status",
        expect: Expect::Ok,
    }),
    releases: &[&NEXUS_RELEASE],
    outputs: &[Output {
        name: "web UI",
        at: OutputAt::Url("/"),
    }],
    ..BASE
};

/// sonatype/helm3-charts' nexus-repository-manager 39.0.0 (Nexus 3.39.0).
pub const NEXUS_RELEASE: Release = Release {
    title: "Nexus",
    slug: "nexus",
    pinned: Some("39.0.0"),
    namespace: "nexus",
    // The chart runs one Deployment (its StatefulSet mode is marked
    // unsupported); its readiness probe is GET / on 8081.
    ready: &[("Deployment", "nexus-repository-manager")],
    form: Form::Chart {
        release: "nexus-repository-manager",
    },
    place: Place::Management,
    values: Values::Planned,
    file: |v| format!("nexus-repository-manager-{v}.tgz"),
    url: |_, v| format!("https://sonatype.github.io/helm3-charts/nexus-repository-manager-{v}.tgz"),
    ..RELEASE
};

pub const SONARQUBE: Component = Component {
    key: "sonarqube",
    slug: "sonarqube",
    about: "SonarQube, installed in a cluster with the chart's PostgreSQL (placement cluster, at \
            sonarqube.<domain>) or yours (placement external; `cluster` names where it runs, for preflight), \
            configured through its API: admin password, tenants' users and tokens.",
    versions: Known {
        title: "SonarQube",
        releases: &["9.5"],
    },
    subdomain: Some(Subdomain::new("sonarqube")),
    // 200 from the start, with {"status": "STARTING"} (or DB_MIGRATION_NEEDED)
    // until it serves: UP.
    health: Some(Health {
        name: "SonarQube",
        path: "/api/system/status",
        expect: Expect::Status("UP"),
    }),
    releases: &[&SONARQUBE_RELEASE],
    outputs: &[Output {
        name: "web UI",
        at: OutputAt::Url("/"),
    }],
    ..BASE
};

/// SonarSource/helm-chart-sonarqube's sonarqube chart 4.0.0, whose
/// appVersion is 9.5.0 (commit "REL-2267 SonarQube 9.5 release"), with
/// Bitnami's PostgreSQL chart as its dependency.
pub const SONARQUBE_RELEASE: Release = Release {
    title: "SonarQube",
    slug: "sonarqube",
    pinned: Some("4.0.0"),
    namespace: "sonarqube",
    // `deploymentType: StatefulSet` (the chart's default) and the
    // PostgreSQL dependency's StatefulSet.
    ready: &[
        ("StatefulSet", "sonarqube-postgresql"),
        ("StatefulSet", "sonarqube-sonarqube"),
    ],
    form: Form::Chart { release: "sonarqube" },
    place: Place::Management,
    values: Values::Planned,
    file: |v| format!("sonarqube-{v}.tgz"),
    url: |gh, v| format!("{gh}/SonarSource/helm-chart-sonarqube/releases/download/sonarqube-{v}/sonarqube-{v}.tgz"),
    ..RELEASE
};
