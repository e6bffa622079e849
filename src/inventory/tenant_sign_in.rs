//! A tenant's own Dex clients (`tenants[].dexClients`): sign-in through
//! Dex for the tenant's applications, beside the platform's. Each client's
//! id is `<tenant>.<name>`: tenant names and client names are DNS labels
//! and none of the platform's own client ids holds a dot, so two tenants
//! can never claim one client, nor a tenant one of ours.

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::diagnostics::{Diagnostic, Report};
use super::load::Loaded;
use super::spans::{push_index, push_key};

/// One OAuth2/OIDC client of a tenant's application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantDexClient {
    /// A DNS label, unique in the tenant; the client id is `<tenant>.<name>`.
    pub name: String,
    /// Where Dex may send users back to (the application's callbacks).
    #[serde(rename = "redirectURIs")]
    pub redirect_uris: Vec<String>,
}

/// The id Dex knows a tenant's client by.
pub fn client_id(tenant: &str, name: &str) -> String {
    format!("{tenant}.{name}")
}

/// Names, callbacks, duplicates, and Dex being installed at all.
pub fn validate(loaded: &Loaded, report: &mut Report) {
    let inv = &loaded.inventory;
    let dex = inv.components.enabled("dex");
    let mut error = |path: &str, message: String, hint: &str| {
        report.diagnostics.push(
            Diagnostic::error(path, message)
                .with_hint(hint)
                .at(loaded.spans.value(path)),
        );
    };
    for (i, t) in inv.tenants.iter().enumerate() {
        if t.dex_clients.is_empty() {
            continue;
        }
        let clients_path = push_key(&push_index("tenants", i), "dexClients");
        if !dex {
            error(
                &clients_path,
                format!("tenant `{}` declares Dex clients but Dex is not installed", t.name),
                "add `components.dex`, or remove the tenant's `dexClients`",
            );
        }
        let mut seen: HashMap<&str, String> = HashMap::new();
        for (j, c) in t.dex_clients.iter().enumerate() {
            let at = push_index(&clients_path, j);
            let name_path = push_key(&at, "name");
            if let Err(why) = super::validate::check_dns_label(&c.name) {
                error(
                    &name_path,
                    format!("`{}` is not a valid Dex client name: {why}", c.name),
                    "use lower-case letters, digits and '-' (DNS-1123 label); the client id is `<tenant>.<name>`",
                );
            }
            if let Some(first) = seen.get(c.name.as_str()) {
                let first = match loaded.spans.value(first) {
                    Some(s) => format!("{first} (line {}, column {})", s.line, s.col),
                    None => first.clone(),
                };
                error(
                    &name_path,
                    format!("tenant `{}` declares Dex client `{}` twice", t.name, c.name),
                    &format!("the first is at {first}"),
                );
            } else {
                seen.insert(&c.name, name_path.clone());
            }
            let uris_path = push_key(&at, "redirectURIs");
            if c.redirect_uris.is_empty() {
                error(
                    &uris_path,
                    format!("Dex client `{}` of tenant `{}` has no redirect URI", c.name, t.name),
                    "list the application's callback URL(s); Dex sends users nowhere else",
                );
            }
            for (k, uri) in c.redirect_uris.iter().enumerate() {
                if !(uri.starts_with("https://") || uri.starts_with("http://")) {
                    error(
                        &push_index(&uris_path, k),
                        format!("redirect URI `{uri}` is not an http(s) URL"),
                        "e.g. https://app.example.com/oauth2/callback",
                    );
                }
            }
        }
    }
}
