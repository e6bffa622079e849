//! Every component this installer knows, each declared once, as data: its
//! inventory key (`components.<key>`), the releases it may be asked for
//! (the default first), what it needs enabled beside it, whether it may run
//! on a host of its own, the upstream files the stack applies for it and
//! where they go, how their readiness is judged, its host name under the
//! platform's domain, its Dex client and its health endpoint.
//!
//! Why here, below the inventory, and not in `components`: the inventory
//! validates against these facts (unknown keys, unknown versions, missing
//! needs, host placement) and describes them in its JSON schema, and the
//! stack's planner places releases by them. Data both read must sit below
//! both, or one of them would reach up (see tests/fast/layering.rs). The
//! catalog is pure data — no I/O, no inventory types, no planning — so it
//! can sit that low; what needs code (values computed from the inventory,
//! objects built when a step runs) stays in `components`, which reads its
//! entry from here.
//!
//! The entries themselves are in `entries.rs`: adding a chart- or
//! manifest-based component is one entry there (plus, only if it must be
//! configured at run time, its code under `components/stack/runtime`).

mod entries;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use self::entries::*;
use crate::versions::Known;

/// What a cluster is for. The catalog places runtime releases by it and the
/// inventory lets the user give it (`clusters[].usage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClusterUsage {
    /// Runs the tenant management plane.
    Host,
    /// Runs pipelines (Tekton, Argo Events).
    Pipeline,
    /// Runs deployments (Argo CD, Argo Rollouts).
    Deployment,
}

/// A component's host name below the platform's domain (`dex` in
/// `dex.example.com`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subdomain(&'static str);

impl Subdomain {
    pub const fn new(label: &'static str) -> Subdomain {
        Subdomain(label)
    }

    /// The label alone, for places that add the domain themselves.
    pub fn label(self) -> &'static str {
        self.0
    }

    pub fn host(self, domain: &str) -> String {
        format!("{}.{domain}", self.0)
    }

    /// The component's base URL (HTTPS through the ingress, default port).
    pub fn url(self, domain: &str) -> String {
        format!("https://{}", self.host(domain))
    }
}

/// One thing the inventory may list under `components`.
#[derive(Debug)]
pub struct Component {
    /// The inventory key (`components.<key>`).
    pub key: &'static str,
    /// Names its step on the management side (`stack/<slug>/<cluster>`).
    pub slug: &'static str,
    /// What the JSON schema says of it.
    pub about: &'static str,
    /// The releases `components.<key>.version` may name, the default first.
    /// (Vault's are its server's; with `distribution: openbao` the
    /// inventory checks against OpenBao's instead.)
    pub versions: Known,
    /// Components that must be enabled beside it (by key). The one table of
    /// these rules: validation reports a missing one, and the stack's
    /// planner orders this component's management-side step after theirs
    /// (GitLab's and Vault's configure steps, or their stack steps).
    pub needs: &'static [&'static str],
    /// Whether `placement: host` may install it on a host of its own.
    pub on_host: bool,
    /// Where it answers under the platform's domain, if it is web-facing.
    pub subdomain: Option<Subdomain>,
    /// Its Dex client, if its users sign in through Dex. Dex's static
    /// clients are those of the enabled components that have one.
    pub sign_in: Option<SignIn>,
    /// What the final health step asks of it (at its subdomain, through the
    /// ingress), when it is installed on a cluster.
    pub health: Option<Health>,
    /// What `nautes-install outputs` lists of it once it is installed on a
    /// cluster (its Dex client secret, if it has one, goes without saying).
    pub outputs: &'static [Output],
    /// The upstream releases the stack applies for it.
    pub releases: &'static [&'static Release],
}

impl Component {
    pub fn default_version(&self) -> &'static str {
        self.versions.default_release()
    }
}

/// Something an installed component hands its users.
#[derive(Debug)]
pub struct Output {
    /// As `outputs` names it.
    pub name: &'static str,
    pub at: OutputAt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputAt {
    /// A URL at the component's subdomain (through the ingress), this path.
    Url(&'static str),
    /// A credential kept 0600 under this name in the outputs directory.
    File(&'static str),
}

impl Component {
    /// Its outputs, its Dex client secret among them.
    pub fn outputs(&self) -> impl Iterator<Item = (&'static str, OutputAt)> + '_ {
        self.outputs.iter().map(|o| (o.name, o.at)).chain(
            self.sign_in
                .as_ref()
                .map(|s| ("Dex client secret", OutputAt::File(s.secret_file))),
        )
    }
}

/// A component's OIDC client in Dex.
#[derive(Debug)]
pub struct SignIn {
    /// The client id Dex and the component agree on.
    pub client_id: &'static str,
    /// What Dex's login page calls it.
    pub name: &'static str,
    /// Where the component receives the authorization code (below its
    /// subdomain).
    pub callback_path: &'static str,
    /// The shared client secret, made once and kept 0600 under this name in
    /// the outputs directory.
    pub secret_file: &'static str,
    /// The component works without Dex too (with its own accounts): it does
    /// not need Dex, and gets its client, and signs in through Dex, only
    /// when Dex is installed beside it.
    pub without_dex: bool,
}

/// What a health check expects of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Any HTTP answer below 500: the service is up and its TLS checks out.
    Answers,
    /// 2xx.
    Ok,
    /// OpenID discovery whose `issuer` is the component's own URL.
    Issuer,
    /// 2xx with a JSON body whose `status` is this (SonarQube's
    /// `/api/system/status` answers 200 with STARTING until it is UP).
    Status(&'static str),
}

/// A component's health endpoint.
#[derive(Debug)]
pub struct Health {
    /// As the health step names it.
    pub name: &'static str,
    pub path: &'static str,
    pub expect: Expect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// A plain multi-document manifest.
    Manifest,
    /// A packaged Helm chart, rendered with `helm template`.
    Chart { release: &'static str },
}

/// Where the stack applies a release.
#[derive(Debug, Clone, Copy)]
pub enum Place {
    /// The physical cluster ingress traffic for the management cluster
    /// lands on (or `components.<key>.cluster`).
    Ingress,
    /// The management cluster (or `components.<key>.cluster`).
    Management,
    /// Every cluster (physical or virtual) whose usage is one of `usage`;
    /// with `management`, the management cluster too (where the planner
    /// configures it: Argo CD).
    Runtime {
        usage: &'static [ClusterUsage],
        management: bool,
    },
    /// On every cluster the release with this slug goes to, right after
    /// it, and enabled with it (a part with its own file, e.g. the Tekton
    /// Dashboard with Tekton).
    With(&'static str),
    /// Not applied by the stack: delivered from the tenant repository by
    /// Argo CD (Nautes).
    Delivered,
}

/// The values a chart release is rendered with.
#[derive(Debug, Clone, Copy)]
pub enum Values {
    /// `components.<key>.values` as the user wrote them (none for a manifest).
    User,
    /// Computed by the planner from the inventory (Traefik's NodePorts, the
    /// injector's Vault address).
    Planned,
}

/// One upstream file the stack applies: a manifest or a chart.
#[derive(Debug)]
pub struct Release {
    pub title: &'static str,
    /// Names its steps (`stack/<slug>/<cluster>`) and its bundle directory.
    pub slug: &'static str,
    /// Its version when it is not the component's (`components.<key>.version`):
    /// a part pinned on its own (the Tekton Dashboard, the Vault chart).
    pub pinned: Option<&'static str>,
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
    pub place: Place,
    pub values: Values,
    /// Kinds the release ships that current Kubernetes no longer serves:
    /// skipped instead of failing the apply.
    pub removed_kinds: &'static [(&'static str, &'static str)],
    /// File name for a version (e.g. `traefik-10.24.0.tgz`).
    pub file: fn(&str) -> String,
    /// Download URL for a version; `{github}` is the GitHub base (or mirror).
    pub url: fn(&str, &str) -> String,
}

impl Release {
    pub fn file(&self, version: &str) -> String {
        (self.file)(version)
    }

    pub fn url(&self, github: &str, version: &str) -> String {
        (self.url)(github, version)
    }

    /// The component whose entry lists this release.
    pub fn component(&self) -> &'static Component {
        COMPONENTS
            .iter()
            .copied()
            .find(|c| c.releases.iter().any(|r| r.slug == self.slug))
            .expect("every release is listed by its component (see the catalog's tests)")
    }
}

/// The component with inventory key `key`.
pub fn component(key: &str) -> Option<&'static Component> {
    COMPONENTS.iter().copied().find(|c| c.key == key)
}

/// Every release, in the order of their components, each component's in
/// its own order: the order the planner visits them.
pub fn releases() -> impl Iterator<Item = &'static Release> {
    COMPONENTS.iter().flat_map(|c| c.releases.iter().copied())
}

/// The release with `slug`.
pub fn release(slug: &str) -> Option<&'static Release> {
    releases().find(|r| r.slug == slug)
}

/// The components whose users sign in through Dex, in catalog order.
pub fn sign_ins() -> impl Iterator<Item = (&'static Component, &'static SignIn)> {
    COMPONENTS.iter().filter_map(|c| c.sign_in.as_ref().map(|s| (*c, s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn keys_slugs_and_client_ids_are_unique() {
        let keys: BTreeSet<&str> = COMPONENTS.iter().map(|c| c.key).collect();
        assert_eq!(keys.len(), COMPONENTS.len());
        let slugs: BTreeSet<&str> = releases().map(|r| r.slug).collect();
        assert_eq!(slugs.len(), releases().count());
        let ids: BTreeSet<&str> = sign_ins().map(|(_, s)| s.client_id).collect();
        assert_eq!(ids.len(), sign_ins().count());
    }

    #[test]
    fn what_an_entry_refers_to_exists() {
        for c in COMPONENTS {
            for need in c.needs {
                assert!(component(need).is_some(), "{} needs unknown `{need}`", c.key);
            }
            assert!(!c.versions.releases.is_empty(), "{} has no release", c.key);
            // Sign-in, health and URLs are reached at the component's host name.
            let urls = c.outputs.iter().any(|o| matches!(o.at, OutputAt::Url(_)));
            assert!(
                c.subdomain.is_some() || (c.sign_in.is_none() && c.health.is_none() && !urls),
                "{} signs in or is checked without a host name",
                c.key
            );
            // Dex signs users in: a component with a client needs it,
            // unless it declares that it also works without (then its
            // client is there only when Dex is).
            if let Some(s) = &c.sign_in {
                assert!(
                    c.needs.contains(&"dex") != s.without_dex,
                    "{}: a Dex client needs dex, or says it works without (and then does not need it)",
                    c.key
                );
            }
            for r in c.releases {
                assert_eq!(r.component().key, c.key);
                for slug in r.namespace_of.iter().chain(match &r.place {
                    Place::With(s) => Some(s),
                    _ => None,
                }) {
                    assert!(release(slug).is_some(), "{}: no release `{slug}`", r.slug);
                }
            }
        }
    }

    #[test]
    fn each_default_is_the_first_known_release() {
        for (key, default) in [
            ("certManager", "v1.8.0"),
            ("traefik", "10.24.0"),
            ("vault", crate::versions::VAULT),
            ("gitlab", crate::versions::GITLAB),
            ("hnc", "v1.0.0"),
            ("nautes", "v0.3.8"),
        ] {
            assert_eq!(component(key).unwrap().default_version(), default, "{key}");
        }
        assert!(component("certManager").unwrap().versions.has("v1.8.1"));
        assert!(!component("certManager").unwrap().versions.has("v1.9.0"));
        assert!(component("grafana").is_none());
    }

    #[test]
    fn redirect_uris_and_hosts_are_below_the_domain() {
        assert_eq!(DEX.subdomain.unwrap().host("example.com"), "dex.example.com");
        assert_eq!(OAUTH2_PROXY.subdomain.unwrap().url("a.b"), "https://auth.a.b");
    }
}
