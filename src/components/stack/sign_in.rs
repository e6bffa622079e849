//! Who signs in through Dex: every catalog component that declares a
//! `sign_in` (see `crate::catalog`). Dex's static clients are derived from
//! those and the components the inventory enables, and each component
//! takes its client id, secret and callback from its entry, so adding a UI
//! behind Dex is adding `sign_in` to its catalog entry, not editing Dex.

use crate::catalog::{self, Component, Subdomain};
use crate::inventory::Components;

/// One OIDC client of Dex, as its component's catalog entry declares it.
#[derive(Debug, Clone, Copy)]
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
    /// The client of `component`, which must declare `sign_in` and a
    /// subdomain (the catalog's tests check both go together).
    pub const fn of(component: &Component) -> OidcClient {
        match (&component.sign_in, component.subdomain) {
            (Some(s), Some(subdomain)) => OidcClient {
                id: s.client_id,
                name: s.name,
                component: component.key,
                subdomain,
                callback_path: s.callback_path,
                secret_file: s.secret_file,
            },
            _ => panic!("a component without sign-in has no Dex client"),
        }
    }

    pub fn redirect_uri(&self, domain: &str) -> String {
        self.redirect_uri_at(&self.subdomain.url(domain))
    }

    /// The callback below the component's own base URL (an instance that
    /// answers somewhere else than its subdomain).
    pub fn redirect_uri_at(&self, base_url: &str) -> String {
        format!("{}{}", base_url.trim_end_matches('/'), self.callback_path)
    }
}

pub const ARGOCD: OidcClient = OidcClient::of(&catalog::ARGOCD);
/// oauth2-proxy signs users in for the UIs without OIDC of their own.
pub const OAUTH2_PROXY: OidcClient = OidcClient::of(&catalog::OAUTH2_PROXY);
/// Harbor's `oidc_auth`, when Dex is installed.
pub const HARBOR: OidcClient = OidcClient::of(&catalog::HARBOR);

/// Every client, in catalog order.
pub fn clients() -> impl Iterator<Item = OidcClient> {
    catalog::sign_ins().map(|(c, _)| OidcClient::of(c))
}

/// A public client of Dex: a login run on the user's own machine, which can
/// keep no secret and receives the code on a loopback redirect
/// (`http://localhost:<port>`, which Dex accepts from public clients).
#[derive(Debug)]
pub struct PublicClient {
    pub id: &'static str,
    pub name: &'static str,
}

/// `kubectl oidc-login`, signing in to every cluster's API: the clusters'
/// apiservers take this id as `--oidc-client-id`, the audience of the
/// id_tokens they accept. There whenever Dex is.
pub const KUBERNETES: PublicClient = PublicClient {
    id: "kubernetes",
    name: "Kubernetes",
};

pub const PUBLIC_CLIENTS: [&PublicClient; 1] = [&KUBERNETES];

/// The ids of the clients whose components the inventory enables, in
/// catalog order, then the public clients: what Dex is configured with.
pub fn enabled(components: &Components) -> Vec<String> {
    clients()
        .filter(|c| components.enabled(c.component))
        .map(|c| c.id.to_string())
        .chain(PUBLIC_CLIENTS.iter().map(|c| c.id.to_string()))
        .collect()
}

/// The public client with `id`, if there is one.
pub fn public_by_id(id: &str) -> Option<&'static PublicClient> {
    PUBLIC_CLIENTS.iter().copied().find(|c| c.id == id)
}

/// The client with `id`, if there is one.
pub fn by_id(id: &str) -> Option<OidcClient> {
    clients().find(|c| c.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_each_names_a_component_the_inventory_knows() {
        let mut ids: Vec<&str> = clients()
            .map(|c| c.id)
            .chain(PUBLIC_CLIENTS.iter().map(|c| c.id))
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), clients().count() + PUBLIC_CLIENTS.len());
        for c in clients() {
            assert!(catalog::component(c.component).is_some(), "{}", c.component);
        }
        assert_eq!(
            ARGOCD.redirect_uri("example.com"),
            "https://argocd.example.com/auth/callback"
        );
        assert_eq!(
            HARBOR.redirect_uri("example.com"),
            "https://harbor.example.com/c/oidc/callback"
        );
        assert_eq!(
            HARBOR.redirect_uri_at("https://registry.acme.test:8443/"),
            "https://registry.acme.test:8443/c/oidc/callback"
        );
    }
}
