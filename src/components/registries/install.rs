//! Harbor, Nexus and SonarQube installed in a cluster (`placement:
//! cluster`): the chart values the stack renders them with (host name under
//! the platform's domain behind Traefik, persistent storage, the parts
//! turned off) and the Secrets of ours merged over the charts' own when the
//! step runs.
//!
//! Secrets never go into chart values (those are in the step's spec and
//! state). Each is made once and kept — the admin password where the
//! configure step keeps it (Vault's `repo` engine, else 0600 under the
//! outputs), the rest 0600 under `<outputs>/<product>/internal/` — and
//! reaches the cluster only in a Secret built at run time:
//!
//! * Harbor (chart 1.9.1, which has no value naming an existing Secret for
//!   the admin password): our admin password and the keys the chart would
//!   otherwise draw with `randAlphaNum` on every render (core's secret and
//!   CSRF key, the jobservice and registry secrets) and its fixed default
//!   `secretKey`, merged over `harbor-core`, `harbor-jobservice` and
//!   `harbor-registry`. Harbor starts with our password, so the configure
//!   step logs in with it and changes nothing; and a re-render is the same
//!   objects, so a re-run writes nothing.
//! * Nexus (chart 39.0.0): the chart can give Nexus no password, and the
//!   generated one lands in `admin.password` on the data volume, which
//!   only an exec into the pod could read. We set
//!   `NEXUS_SECURITY_RANDOMPASSWORD=false` instead, so Nexus starts with its
//!   documented default `admin123`; the configure step, which runs once the
//!   Deployment is ready, stores ours and replaces the default through
//!   `/service/rest/v1/security/users/admin/change-password` at once (the
//!   same first-run window a random password has, without a pod exec).
//! * SonarQube (chart 4.0.0): the chart's own password hook takes the
//!   password as a plain value, so it is not used; the configure step
//!   replaces `admin/admin` through the API as for your own SonarQube. The
//!   chart's PostgreSQL gets its passwords from a Secret of ours
//!   (`postgresql.existingSecret`). For an external database set
//!   `postgresql.enabled: false` and the chart's `jdbcOverwrite` keys in
//!   `values` (with `jdbcSecretName` naming your Secret).

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{admin_record, fields, generate_password, store};
use crate::catalog;
use crate::components::vault::VaultTarget;
use crate::engine::{StepContext, StepError};
use crate::secret::{random_token, write_private, Secret};

/// `components.harbor.values.mirror`: our key among Harbor's values (taken
/// out before the chart sees them), asking that the clusters' nodes pull
/// from the Harbor installed in a cluster.
pub const MIRROR_KEY: &str = "mirror";

/// Harbor as a registry the nodes pull from: its name in image references
/// and where containerd reaches it (through the ingress).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HarborMirror {
    pub registry: String,
    pub endpoint: String,
}

/// The Harbor the nodes pull from, when the inventory asks for it.
pub fn harbor_mirror(loaded: &crate::inventory::Loaded) -> Option<HarborMirror> {
    let c = loaded.inventory.components.enabled_one(catalog::HARBOR.key)?;
    if c.placement != crate::inventory::Placement::Cluster || c.values.get(MIRROR_KEY) != Some(&Value::Bool(true)) {
        return None;
    }
    let domain = loaded.inventory.settings.domain.as_deref()?;
    let registry = catalog::HARBOR.subdomain?.host(domain);
    let (_, websecure) = crate::components::stack::traefik_ports(loaded);
    Some(HarborMirror {
        endpoint: format!("https://{registry}:{websecure}"),
        registry,
    })
}

/// Nexus' first-run admin password with `NEXUS_SECURITY_RANDOMPASSWORD=false`.
pub const NEXUS_DEFAULT_PASSWORD: &str = "admin123";
/// The Secret holding the passwords of SonarQube's PostgreSQL.
pub const SONARQUBE_DATABASE_SECRET: &str = "sonarqube-database";

/// Which product a stack step installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Product {
    Harbor,
    Nexus,
    Sonarqube,
}

impl Product {
    pub fn of_slug(slug: &str) -> Option<Product> {
        match slug {
            s if s == catalog::HARBOR_RELEASE.slug => Some(Product::Harbor),
            s if s == catalog::NEXUS_RELEASE.slug => Some(Product::Nexus),
            s if s == catalog::SONARQUBE_RELEASE.slug => Some(Product::Sonarqube),
            _ => None,
        }
    }

    pub fn component(self) -> &'static catalog::Component {
        match self {
            Product::Harbor => &catalog::HARBOR,
            Product::Nexus => &catalog::NEXUS,
            Product::Sonarqube => &catalog::SONARQUBE,
        }
    }

    fn folder(self) -> &'static str {
        self.component().key
    }
}

/// What the step builds when it runs: the Secrets merged over the chart's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallSpec {
    pub product: Product,
    pub namespace: String,
    /// Where the admin password is kept (else 0600 under the outputs).
    pub vault: Option<VaultTarget>,
}

/// Traefik serves an Ingress on websecure with its default certificate
/// (our wildcard) when it carries these.
fn traefik_annotations() -> Value {
    json!({"traefik.ingress.kubernetes.io/router.entrypoints": "websecure",
           "traefik.ingress.kubernetes.io/router.tls": "true"})
}

/// The chart values we plan (the user's `values` are merged over them).
pub fn values(product: Product, domain: &str) -> Value {
    let host = product
        .component()
        .subdomain
        .expect("each registry product has a subdomain")
        .host(domain);
    match product {
        Product::Harbor => json!({
            "expose": {
                "type": "ingress",
                // Traefik terminates TLS with our wildcard: the chart makes no certificate.
                "tls": {"enabled": true, "certSource": "none"},
                "ingress": {"hosts": {"core": host}, "annotations": traefik_annotations()},
            },
            "externalURL": format!("https://{host}"),
            "persistence": {"enabled": true},
            // Notary draws a new CA on every render; ChartMuseum is
            // deprecated in 2.5; Trivy fetches its database from the
            // internet. Each can be turned back on in `values`.
            "notary": {"enabled": false},
            "chartmuseum": {"enabled": false},
            "trivy": {"enabled": false},
        }),
        Product::Nexus => json!({
            "nexus": {"env": [
                // The chart's default, kept (a list is replaced, not merged).
                {"name": "INSTALL4J_ADD_VM_PARAMS", "value": "-Xms2703M -Xmx2703M\n-XX:MaxDirectMemorySize=2703M\n-XX:+UnlockExperimentalVMOptions\n-XX:+UseCGroupMemoryLimitForHeap\n-Djava.util.prefs.userRoot=/nexus-data/javaprefs"},
                {"name": "NEXUS_SECURITY_RANDOMPASSWORD", "value": "false"},
            ]},
            "ingress": {"enabled": true, "ingressClassName": "", "hostRepo": host, "hostPath": "/",
                        "annotations": traefik_annotations()},
            "persistence": {"enabled": true, "storageSize": "8Gi"},
        }),
        Product::Sonarqube => json!({
            "ingress": {"enabled": true, "hosts": [{"name": host, "path": "/"}],
                        "annotations": traefik_annotations()},
            "persistence": {"enabled": true},
            "postgresql": {"enabled": true, "existingSecret": SONARQUBE_DATABASE_SECRET},
        }),
    }
}

fn b64(s: &Secret) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.expose().as_bytes())
}

/// A random key of `len` characters made once and kept 0600 at
/// `<outputs>/<product>/internal/<name>`.
fn kept_key(ctx: &StepContext, product: Product, name: &str, len: usize) -> Result<Secret, StepError> {
    let path = ctx.outputs_dir.join(product.folder()).join("internal").join(name);
    if let Ok(s) = std::fs::read_to_string(&path) {
        return Ok(Secret::new(s.trim()));
    }
    let token = random_token().map_err(|e| StepError::new(format!("cannot read random bytes: {e}")))?;
    let key = Secret::new(token.expose().chars().take(len).collect::<String>());
    write_private(&path, &key).map_err(|e| StepError::new(format!("cannot write {}: {e}", path.display())))?;
    Ok(key)
}

/// The admin password the configure step will log in with: the kept one,
/// else one made now and kept before anything uses it.
async fn admin_password(ctx: &StepContext, spec: &InstallSpec) -> Result<Secret, StepError> {
    let instance = spec.product.component().key;
    let store = store(ctx, spec.product.folder(), spec.vault.as_ref())?;
    let record = admin_record(instance);
    if let Some(f) = store.get(&record).await? {
        return f
            .get("password")
            .cloned()
            .ok_or_else(|| StepError::new(format!("the stored credential `{record}` has no password")));
    }
    let p = generate_password()?;
    store.put(&record, &fields(&[("password", &p)])).await?;
    Ok(p)
}

fn secret(name: &str, namespace: &str, data: &[(&str, &Secret)]) -> Value {
    let data: serde_json::Map<String, Value> = data.iter().map(|(k, v)| (k.to_string(), json!(b64(v)))).collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace}, "data": data})
}

/// The Secrets of ours for the product's release.
pub async fn objects(ctx: &StepContext, spec: &InstallSpec) -> Result<Vec<Value>, StepError> {
    let ns = spec.namespace.as_str();
    Ok(match spec.product {
        Product::Harbor => {
            let admin = admin_password(ctx, spec).await?;
            let key = |name, len| kept_key(ctx, Product::Harbor, name, len);
            vec![
                secret(
                    "harbor-core",
                    ns,
                    &[
                        ("HARBOR_ADMIN_PASSWORD", &admin),
                        // Core's key for encrypting stored passwords: 16 characters.
                        ("secretKey", &key("secret-key", 16)?),
                        ("secret", &key("core-secret", 16)?),
                        ("CSRF_KEY", &key("csrf-key", 32)?),
                    ],
                ),
                secret(
                    "harbor-jobservice",
                    ns,
                    &[("JOBSERVICE_SECRET", &key("jobservice-secret", 16)?)],
                ),
                secret(
                    "harbor-registry",
                    ns,
                    &[("REGISTRY_HTTP_SECRET", &key("registry-http-secret", 16)?)],
                ),
            ]
        }
        Product::Nexus => Vec::new(),
        Product::Sonarqube => {
            let key = |name| kept_key(ctx, Product::Sonarqube, name, 32);
            vec![secret(
                SONARQUBE_DATABASE_SECRET,
                ns,
                &[
                    ("postgresql-password", &key("database-password")?),
                    ("postgresql-postgres-password", &key("postgres-password")?),
                ],
            )]
        }
    })
}
