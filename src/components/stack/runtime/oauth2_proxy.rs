//! oauth2-proxy behind Traefik: a sign-in through Dex for what has no login
//! of its own. A route requires it by naming its forwardAuth Middleware.
//! Its Dex client secret and cookie secret are made once and kept 0600.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::dex::client_secret;
use super::{b64, ca_pem, ingress, kept_secret};
use crate::components::endpoints;
use crate::components::stack::sign_in;
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

pub(super) fn oauth2_proxy(ctx: &StepContext, spec: &Oauth2ProxySpec) -> Result<Vec<Value>, StepError> {
    let ns = "oauth2-proxy";
    let domain = &spec.domain;
    let cookie = kept_secret(ctx, "oauth2-proxy/cookie-secret")?;
    // oauth2-proxy wants a 16, 24 or 32 byte cookie secret: the first 32 hex characters.
    let cookie: String = cookie.expose().chars().take(32).collect();
    let client_secret = client_secret(ctx, &sign_in::OAUTH2_PROXY)?;
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
                                format!("--client-id={}", sign_in::OAUTH2_PROXY.id), "--email-domain=*",
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
        ingress(
            "oauth2-proxy",
            ns,
            &endpoints::OAUTH2_PROXY.host(domain),
            "oauth2-proxy",
            4180,
        ),
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
