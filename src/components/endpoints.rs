//! Where each web-facing component answers: its host name under the
//! platform's domain, as its catalog entry declares it. Ingresses, OIDC
//! redirect URIs, Dex's issuer and the health checks all take the names
//! from here, so the parts that must agree on a name cannot drift apart.

pub use crate::catalog::Subdomain;
use crate::catalog::{self, Component};

/// A web-facing component's host name (the catalog's tests check that
/// every component with sign-in or a health endpoint has one).
const fn subdomain(c: &Component) -> Subdomain {
    match c.subdomain {
        Some(s) => s,
        None => panic!("a web-facing component without a subdomain in the catalog"),
    }
}

pub const DEX: Subdomain = subdomain(&catalog::DEX);
pub const ARGOCD: Subdomain = subdomain(&catalog::ARGOCD);
/// oauth2-proxy, which signs users in for UIs without OIDC of their own.
pub const OAUTH2_PROXY: Subdomain = subdomain(&catalog::OAUTH2_PROXY);
/// Harbor installed in the cluster (one you run answers at its own URL).
pub const HARBOR: Subdomain = subdomain(&catalog::HARBOR);
pub const GITLAB: Subdomain = subdomain(&catalog::GITLAB);
/// The Nautes API server, unless `components.nautes.values.apiHost` names another.
pub const NAUTES_API: Subdomain = subdomain(&catalog::NAUTES);

/// Dex's issuer: what every OIDC client and the health check expect.
pub fn dex_issuer(domain: &str) -> String {
    DEX.url(domain)
}

/// Where GitLab sends Dex the authorization code: the OAuth application's
/// redirect URI and the GitLab connector's, which must be the same.
pub fn dex_callback(domain: &str) -> String {
    format!("{}/callback", dex_issuer(domain))
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
