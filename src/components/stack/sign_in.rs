//! Who signs in through Dex: one entry per component whose web UI trusts
//! Dex. Dex's static clients are derived from this list and the components
//! the inventory enables, and each component takes its client id, secret
//! and callback from its entry, so adding a UI behind Dex is adding an
//! entry here, not editing Dex.

use crate::components::endpoints::{self, Subdomain};
use crate::inventory::Components;

/// One OIDC client of Dex.
#[derive(Debug)]
pub struct OidcClient {
    /// The client id Dex and the component agree on.
    pub id: &'static str,
    /// What Dex's login page calls it.
    pub name: &'static str,
    /// The inventory key (`components.<key>`) that installs it.
    pub component: &'static str,
    pub subdomain: Subdomain,
    /// Where the component receives the authorization code.
    pub callback_path: &'static str,
    /// The shared client secret, made once and kept 0600 under this name in
    /// the outputs directory.
    pub secret_file: &'static str,
}

impl OidcClient {
    pub fn redirect_uri(&self, domain: &str) -> String {
        format!("{}{}", self.subdomain.url(domain), self.callback_path)
    }
}

pub const ARGOCD: OidcClient = OidcClient {
    id: "argocd",
    name: "Argo CD",
    component: "argocd",
    subdomain: endpoints::ARGOCD,
    callback_path: "/auth/callback",
    secret_file: "argocd/dex-client-secret",
};

/// oauth2-proxy signs users in for the UIs without OIDC of their own.
pub const OAUTH2_PROXY: OidcClient = OidcClient {
    id: "oauth2-proxy",
    name: "oauth2-proxy",
    component: "oauth2Proxy",
    subdomain: endpoints::OAUTH2_PROXY,
    callback_path: "/oauth2/callback",
    secret_file: "oauth2-proxy/dex-client-secret",
};

/// Harbor's OIDC sign-in (`auth_mode: oidc_auth`, set through its API by
/// `harbor/harbor/configure`), for the shared Harbor at `harbor.<domain>`.
pub const HARBOR: OidcClient = OidcClient {
    id: "harbor",
    name: "Harbor",
    component: "harbor",
    subdomain: endpoints::HARBOR,
    callback_path: "/c/oidc/callback",
    secret_file: "harbor/dex-client-secret",
};

pub const CLIENTS: [&OidcClient; 3] = [&ARGOCD, &OAUTH2_PROXY, &HARBOR];

/// The ids of the clients whose components the inventory enables, in
/// [`CLIENTS`] order: what Dex is configured with.
pub fn enabled(components: &Components) -> Vec<String> {
    CLIENTS
        .iter()
        .filter(|c| components.enabled(c.component))
        .map(|c| c.id.to_string())
        .collect()
}

/// The client with `id`, if there is one.
pub fn by_id(id: &str) -> Option<&'static OidcClient> {
    CLIENTS.iter().copied().find(|c| c.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_each_names_a_component_the_inventory_knows() {
        let mut ids: Vec<&str> = CLIENTS.iter().map(|c| c.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), CLIENTS.len());
        for c in CLIENTS {
            assert!(Components::KEYS.contains(&c.component), "{}", c.component);
        }
        assert_eq!(
            ARGOCD.redirect_uri("example.com"),
            "https://argocd.example.com/auth/callback"
        );
    }
}
