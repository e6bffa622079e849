//! Where each web-facing component answers: its host name under the
//! platform's domain. Ingresses, OIDC redirect URIs, Dex's issuer and the
//! health checks all take the names from here, so a name is changed in one
//! place and the parts that must agree on it cannot drift apart.

/// A component's host name below the platform's domain (`dex` in
/// `dex.example.com`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subdomain(&'static str);

pub const DEX: Subdomain = Subdomain("dex");
pub const ARGOCD: Subdomain = Subdomain("argocd");
/// oauth2-proxy, which signs users in for UIs without OIDC of their own.
pub const OAUTH2_PROXY: Subdomain = Subdomain("auth");
pub const GITLAB: Subdomain = Subdomain("gitlab");
/// The shared Harbor, as Dex's client for it expects it.
pub const HARBOR: Subdomain = Subdomain("harbor");
/// The Nautes API server, unless `components.nautes.values.apiHost` names another.
pub const NAUTES_API: Subdomain = Subdomain("api");

impl Subdomain {
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

/// Dex's issuer: what every OIDC client and the health check expect.
pub fn dex_issuer(domain: &str) -> String {
    DEX.url(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_urls_are_below_the_domain() {
        assert_eq!(DEX.host("example.com"), "dex.example.com");
        assert_eq!(dex_issuer("example.com"), "https://dex.example.com");
        assert_eq!(OAUTH2_PROXY.url("a.b"), "https://auth.a.b");
    }
}
