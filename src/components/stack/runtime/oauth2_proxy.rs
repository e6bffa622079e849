//! oauth2-proxy behind Traefik: a sign-in through Dex for what has no login
//! of its own. A route requires it by naming its forwardAuth Middleware.
//! Its Dex client secret and cookie secret are made once and kept 0600.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::dex::client_secret;
use super::{b64, ca_pem, ingress, kept_secret, Configure, Planner, Runtime, StackStep};
use crate::catalog::{self, Place};
use crate::components::stack::plan::runtime_clusters;
use crate::components::stack::{sign_in, step_id};
use crate::components::{certificates, endpoints};
use crate::drivers::kube::KubeClient;
use crate::engine::{StepContext, StepError};

/// The Traefik middleware an IngressRoute names to require a sign-in.
pub const OAUTH2_PROXY_MIDDLEWARE: &str = "oauth2-proxy";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Oauth2ProxySpec {
    pub domain: String,
    pub version: String,
    /// The Tekton Dashboard runs on this cluster: route `tekton.<domain>`
    /// to it through the forwardAuth.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tekton_dashboard: bool,
}

/// Where the Tekton Dashboard answers, behind a sign-in.
pub const TEKTON_DASHBOARD_HOST: crate::catalog::Subdomain = crate::catalog::Subdomain::new("tekton");

/// oauth2-proxy's forwardAuth as a Traefik Middleware in `namespace`:
/// each request goes first to `/oauth2/auth`, which answers 202 with the
/// user's headers for a signed-in session (its cookie is set for the whole
/// domain) and 401 otherwise, which Traefik returns instead of the page.
/// In the route's own namespace: Traefik 2.8 refuses a route naming a
/// Middleware of another namespace unless `allowCrossNamespace` is on.
pub fn forward_auth(name: &str, namespace: &str) -> Value {
    json!({"apiVersion": "traefik.containo.us/v1alpha1", "kind": "Middleware",
           "metadata": {"name": name, "namespace": namespace},
           "spec": {"forwardAuth": {"address": "http://oauth2-proxy.oauth2-proxy.svc:4180/oauth2/auth",
                                     "trustForwardHeader": true,
                                     "authResponseHeaders": ["X-Auth-Request-User", "X-Auth-Request-Email",
                                                             "X-Auth-Request-Groups"]}}})
}

/// The Tekton Dashboard's route (`tekton.<domain>`, our wildcard
/// certificate, Traefik's websecure entry point) through the forwardAuth.
pub fn tekton_dashboard_route(domain: &str) -> Vec<Value> {
    let ns = crate::catalog::TEKTON_DASHBOARD.namespace;
    let host = TEKTON_DASHBOARD_HOST.host(domain);
    vec![
        forward_auth("tekton-dashboard-sign-in", ns),
        json!({"apiVersion": "traefik.containo.us/v1alpha1", "kind": "IngressRoute",
               "metadata": {"name": "tekton-dashboard", "namespace": ns},
               "spec": {"entryPoints": ["websecure"],
                        "routes": [{"kind": "Rule", "match": format!("Host(`{host}`)"),
                                    "middlewares": [{"name": "tekton-dashboard-sign-in"}],
                                    "services": [{"name": "tekton-dashboard", "port": 9097}]}],
                        "tls": {}}}),
    ]
}

/// oauth2-proxy on the ingress cluster (or its own `cluster`), behind Traefik.
pub(super) struct Oauth2Proxy;

#[async_trait]
impl Configure for Oauth2Proxy {
    const TYPE: &'static str = "oauth2Proxy";
    type Spec = Oauth2ProxySpec;
    const NEEDS: &'static [&'static str] = catalog::OAUTH2_PROXY.needs;

    fn plan(&self, p: &mut Planner, _mgmt: &str) {
        let (Some(c), Some(ingress)) = (p.enabled(catalog::OAUTH2_PROXY.key), p.ingress.clone()) else {
            return;
        };
        let version = c
            .version
            .clone()
            .unwrap_or(catalog::OAUTH2_PROXY.default_version().into());
        let target = c.cluster.clone().unwrap_or(ingress.clone());
        let mut needs = p.catalog_needs(&catalog::OAUTH2_PROXY);
        needs.push(certificates::STEP_ID.into());
        // Its Middleware is a Traefik kind.
        if p.enabled(catalog::TRAEFIK.key).is_some() && ingress == target {
            needs.push(step_id(catalog::TRAEFIK_RELEASE.slug, &target));
        }
        // The Tekton Dashboard has no sign-in of its own: where it runs on
        // this cluster (behind this Traefik), its route goes through
        // oauth2-proxy's forwardAuth, made with it. On another cluster no
        // Traefik of ours routes to it, so it gets no route (reach it with
        // `kubectl port-forward`, with that cluster's own credentials).
        // (Runtime releases are planned after this: place it as they will be.)
        let tekton_dashboard = p.enabled(catalog::TEKTON.key).is_some()
            && match catalog::TEKTON_RELEASE.place {
                Place::Runtime { usage, .. } => runtime_clusters(p.loaded, usage).contains(&target),
                _ => false,
            };
        if tekton_dashboard {
            needs.push(step_id(catalog::TEKTON_DASHBOARD.slug, &target));
        }
        let spec = Oauth2ProxySpec {
            domain: p.domain.clone(),
            version,
            tekton_dashboard,
        };
        let runtime = Runtime::of::<Self>(&spec);
        let step = StackStep::ours(
            catalog::OAUTH2_PROXY.slug,
            Some(&catalog::OAUTH2_PROXY),
            runtime,
            NAMESPACE,
        );
        p.add(&target, step.needing(needs));
    }

    async fn objects(
        &self,
        ctx: &StepContext,
        spec: &Oauth2ProxySpec,
        _: &KubeClient,
    ) -> Result<Vec<Value>, StepError> {
        oauth2_proxy(ctx, spec)
    }
}

const NAMESPACE: &str = "oauth2-proxy";

/// Its Dex client, host name included, as its catalog entry declares them.
const CLIENT: sign_in::OidcClient = sign_in::OidcClient::of(&catalog::OAUTH2_PROXY);

/// Where its cookie secret is kept: the file its catalog entry lists among its outputs.
const COOKIE_SECRET: &str = match catalog::OAUTH2_PROXY.outputs[1].at {
    catalog::OutputAt::File(f) => f,
    catalog::OutputAt::Url(_) => panic!("oauth2-proxy's second output is its cookie secret"),
};

fn oauth2_proxy(ctx: &StepContext, spec: &Oauth2ProxySpec) -> Result<Vec<Value>, StepError> {
    let ns = NAMESPACE;
    let domain = &spec.domain;
    let cookie = kept_secret(ctx, COOKIE_SECRET)?;
    // oauth2-proxy wants a 16, 24 or 32 byte cookie secret: the first 32 hex characters.
    let cookie: String = cookie.expose().chars().take(32).collect();
    let client_secret = client_secret(ctx, &CLIENT)?;
    let labels = json!({"app.kubernetes.io/name": "oauth2-proxy"});
    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "oauth2-proxy", "namespace": ns},
               "data": {"client-secret": b64(client_secret.expose()), "cookie-secret": b64(&cookie)}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "nautes-ca", "namespace": ns},
               "data": {"ca.crt": ca_pem(ctx)?}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "oauth2-proxy", "namespace": ns, "labels": labels},
               "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                   "metadata": {"labels": labels},
                   "spec": {"containers": [{
                       "name": "oauth2-proxy", "image": format!("quay.io/oauth2-proxy/oauth2-proxy:{}", spec.version),
                       "args": ["--provider=oidc", format!("--oidc-issuer-url={}", endpoints::dex_issuer(domain)),
                                format!("--client-id={}", CLIENT.id), "--email-domain=*",
                                "--upstream=static://202", "--http-address=0.0.0.0:4180", "--reverse-proxy=true",
                                format!("--cookie-domain=.{domain}"), format!("--whitelist-domain=.{domain}"),
                                "--provider-ca-file=/etc/nautes-ca/ca.crt", "--set-xauthrequest=true"],
                       "env": [{"name": "OAUTH2_PROXY_CLIENT_SECRET", "valueFrom": {"secretKeyRef": {"name": "oauth2-proxy", "key": "client-secret"}}},
                               {"name": "OAUTH2_PROXY_COOKIE_SECRET", "valueFrom": {"secretKeyRef": {"name": "oauth2-proxy", "key": "cookie-secret"}}}],
                       "ports": [{"name": "http", "containerPort": 4180}],
                       "readinessProbe": {"httpGet": {"path": "/ping", "port": 4180}},
                       "volumeMounts": [{"name": "ca", "mountPath": "/etc/nautes-ca", "readOnly": true}]}],
                       "volumes": [{"name": "ca", "configMap": {"name": "nautes-ca"}}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "oauth2-proxy", "namespace": ns},
               "spec": {"selector": labels, "ports": [{"name": "http", "port": 4180, "targetPort": 4180}]}}),
        ingress("oauth2-proxy", ns, &CLIENT.subdomain.host(domain), "oauth2-proxy", 4180),
        // What a route adds to require a sign-in (Traefik's forwardAuth).
        json!({"apiVersion": "traefik.containo.us/v1alpha1", "kind": "Middleware",
               "metadata": {"name": OAUTH2_PROXY_MIDDLEWARE, "namespace": ns},
               "spec": {"forwardAuth": {"address": "http://oauth2-proxy.oauth2-proxy.svc:4180/oauth2/auth",
                                         "trustForwardHeader": true,
                                         "authResponseHeaders": ["X-Auth-Request-User", "X-Auth-Request-Email"]}}}),
    ];
    if spec.tekton_dashboard {
        objects.extend(tekton_dashboard_route(domain));
    }
    Ok(objects)
}
