//! Harbor, Nexus and SonarQube installed in a cluster: each release's
//! planned values (ours, with the user's over them) and, for Harbor and
//! SonarQube, the Secrets its step builds when it runs and merges over the
//! chart's (`components::registries::install` knows what they hold).

use async_trait::async_trait;
use serde_json::Value;

use super::{Configure, Ours, Planner, Runtime};
use crate::catalog;
use crate::components::registries::install::{self, InstallSpec, Product};
use crate::components::stack::plan::values_of;
use crate::components::vault;
use crate::drivers::kube::KubeClient;
use crate::engine::{StepContext, StepError};

/// The release's values and needs, and its run-time Secrets when it has
/// any. After Traefik (its Ingress is Traefik's) and Vault's configuration
/// (the admin password goes to Vault's `repo` engine); after Dex too (the
/// stack planner adds that once Dex's step exists).
fn release<C: Configure<Spec = InstallSpec>>(p: &mut Planner, product: Product, secrets: bool) -> Ours {
    let release = product.component().releases[0];
    let mut values = install::values(product, &p.domain);
    let mut user = values_of(p.loaded, product.component().key);
    if product == Product::Harbor {
        user.remove(install::MIRROR_KEY); // ours, not the chart's
    }
    crate::steps::manifests::merge_values(&mut values, &Value::Object(user));
    let mut needs = Vec::new();
    if let Some(traefik) = p.planned.get(catalog::TRAEFIK.key) {
        needs.push(traefik.clone());
    }
    if p.vault_target.is_some() && p.planned_before(vault::STEP_ID) {
        needs.push(vault::STEP_ID.to_string());
    }
    let spec = InstallSpec {
        product,
        namespace: release.namespace.into(),
        vault: p.vault_target.clone(),
    };
    Ours {
        values,
        runtime: secrets.then(|| Runtime::of::<C>(&spec)),
        needs,
    }
}

/// Harbor: its admin password and the keys its chart would draw anew on
/// every render, in Secrets of ours.
pub(super) struct Harbor;

#[async_trait]
impl Configure for Harbor {
    const TYPE: &'static str = "harborSecrets";
    type Spec = InstallSpec;
    const RELEASE: Option<&'static str> = Some(catalog::HARBOR_RELEASE.slug);

    fn release(&self, p: &mut Planner) -> Ours {
        release::<Self>(p, Product::Harbor, true)
    }

    async fn objects(&self, ctx: &StepContext, spec: &InstallSpec, _: &KubeClient) -> Result<Vec<Value>, StepError> {
        install::objects(ctx, spec).await
    }
}

/// Nexus: values only (it starts with its documented default password,
/// which its configure step replaces).
pub(super) struct Nexus;

#[async_trait]
impl Configure for Nexus {
    const TYPE: &'static str = "nexusValues";
    type Spec = InstallSpec;
    const RELEASE: Option<&'static str> = Some(catalog::NEXUS_RELEASE.slug);

    fn release(&self, p: &mut Planner) -> Ours {
        release::<Self>(p, Product::Nexus, false)
    }

    async fn objects(&self, ctx: &StepContext, spec: &InstallSpec, _: &KubeClient) -> Result<Vec<Value>, StepError> {
        install::objects(ctx, spec).await
    }
}

/// SonarQube: its PostgreSQL's password in a Secret of ours.
pub(super) struct Sonarqube;

#[async_trait]
impl Configure for Sonarqube {
    const TYPE: &'static str = "sonarqubeSecrets";
    type Spec = InstallSpec;
    const RELEASE: Option<&'static str> = Some(catalog::SONARQUBE_RELEASE.slug);

    fn release(&self, p: &mut Planner) -> Ours {
        release::<Self>(p, Product::Sonarqube, true)
    }

    async fn objects(&self, ctx: &StepContext, spec: &InstallSpec, _: &KubeClient) -> Result<Vec<Value>, StepError> {
        install::objects(ctx, spec).await
    }
}
