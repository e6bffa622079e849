//! A tenant's own Dex clients (`tenants[].dexClients`), end to end: the
//! full platform install by the real binary (real control plane, real
//! OpenBao) plans the client into Dex's config and hands its credentials
//! to the tenant in its own Vault path; the **real** Dex, on a config
//! holding exactly that entry, signs a tenant user in to the tenant's
//! application; a re-run writes nothing; the client removed from the
//! inventory leaves neither its Vault secret, nor its kept file, nor its
//! place in Dex's config.

use crate::support::{controlplane, dex, platform, vault};

use base64::Engine;
use nautes_install::components::stack::tenant_clients::TenantClient;
use serde_json::Value;

use crate::support::cli::{all_text, code, stderr, stdout};
use dex::{Dex, DexOptions};
use platform::{platform, Platform, DOMAIN};

const CLIENTS: &str =
    "    dexClients:\n      - name: portal\n        redirectURIs: [https://portal.acme.example/callback]\n";
const SECRET_PATH: &str = "/v1/tenant/data/acme/dex/portal";

fn set_clients(p: &Platform, with: bool) {
    let text = std::fs::read_to_string(p.s.inventory()).unwrap();
    let without = text.replace(CLIENTS, "");
    let new = if with {
        without.replace(
            "    namespaces:\n      - name: acme\n",
            &format!("    namespaces:\n      - name: acme\n{CLIENTS}"),
        )
    } else {
        without
    };
    assert!(
        !with || new.contains(CLIENTS),
        "the platform's tenant acme moved: {new}"
    );
    std::fs::write(p.s.inventory(), new).unwrap();
}

/// Apply; what it printed.
fn apply(p: &Platform) -> String {
    let out = p.s.run("apply", &["--yes"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    format!("{}{}", stdout(&out), stderr(&out))
}

/// The static clients of the Dex config the installer applied.
fn dex_clients(p: &Platform) -> Vec<Value> {
    let secret = p.kube.get("/api/v1/namespaces/dex/secrets/dex-config");
    let yaml = base64::engine::general_purpose::STANDARD
        .decode(
            secret["data"]["config.yaml"]
                .as_str()
                .expect("dex-config holds config.yaml"),
        )
        .unwrap();
    let config: Value = serde_yaml::from_slice(&yaml).unwrap();
    config["staticClients"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_tenants_application_signs_in_through_dex_with_credentials_from_its_vault_path() {
    if controlplane::skip_unless_available() || vault::skip_unless_available() || dex::skip_unless_available() {
        return;
    }
    let p = platform(None);
    set_clients(&p, true);
    let mut printed = apply(&p);

    // Handed to the tenant, in its own Vault path.
    let (status, kv) = p.vault.api("GET", SECRET_PATH, None);
    assert_eq!(status, 200, "{kv}");
    let creds = &kv["data"]["data"];
    assert_eq!(creds["clientId"], "acme.portal");
    assert_eq!(creds["issuer"], format!("https://dex.{DOMAIN}"));
    let secret = creds["clientSecret"].as_str().unwrap().to_string();
    let kept = p.s.workdir().join("outputs/tenants/acme/dex/portal-client-secret");
    assert_eq!(std::fs::read_to_string(&kept).unwrap().trim(), secret);

    // In Dex's config with that secret and the tenant's callback only.
    let entry = dex_clients(&p)
        .into_iter()
        .find(|c| c["id"] == "acme.portal")
        .expect("the tenant's client in Dex's config");
    assert_eq!(entry["secret"], secret.as_str());
    assert_eq!(
        entry["redirectURIs"],
        serde_json::json!(["https://portal.acme.example/callback"])
    );

    // The real Dex signs a tenant user in to the application.
    let planned: TenantClient = TenantClient {
        tenant: "acme".into(),
        name: "portal".into(),
        redirect_uris: vec!["https://portal.acme.example/callback".into()],
    };
    let mut opts = DexOptions::new(DOMAIN);
    opts.tenant_clients = vec![(planned, secret.clone())];
    let dex = Dex::start_with(&p.gitlab, opts);
    let login = dex.login("acme.portal", "erin", &["acme-team"]);
    assert_eq!(login.claims["aud"], "acme.portal");
    assert_eq!(login.claims["iss"], dex.issuer());

    // A re-run writes nothing to the tenant's path.
    p.vault.reset_log();
    printed.push_str(&apply(&p));
    let writes: Vec<String> = p
        .vault
        .writes()
        .into_iter()
        .filter(|w| w.contains("/tenant/"))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    // The secret is in no output, state or log of ours.
    let mut seen = printed;
    seen.push_str(&std::fs::read_to_string(p.s.workdir().join("state.json")).unwrap_or_default());
    seen.push_str(&std::fs::read_to_string(p.s.workdir().join("state.json.journal")).unwrap_or_default());
    seen.push_str(&all_text(&p.s.workdir().join("logs")));
    assert!(
        !seen.contains(&secret),
        "the tenant client's secret leaked into output, state or log"
    );

    // Removed from the inventory: nothing of it is left.
    set_clients(&p, false);
    apply(&p);
    assert_eq!(p.vault.api("GET", SECRET_PATH, None).0, 404);
    assert!(!kept.exists(), "the kept secret stays");
    assert!(!dex_clients(&p).iter().any(|c| c["id"] == "acme.portal"));
}
