//! People and pipelines sign in to Vault (OpenBao) through Dex, and get the
//! policies of the tenant groups Dex says they are in.
//!
//! Two mounts of Vault's JWT/OIDC auth backend, configured against Dex's
//! issuer (discovery over our CA):
//!
//! * `oidc/` (type `oidc`, with Vault's own Dex client): the browser flow,
//!   `vault login -method=oidc role=<role>` and the UI's OIDC login. Its
//!   roles are `role_type: oidc` and ask Dex for the `groups` scope;
//! * `jwt/` (type `jwt`, no client): a pipeline that already holds an
//!   id_token Dex issued to Vault's client (`aud: vault`) logs in with it,
//!   `vault write auth/jwt/login role=<role> jwt=…`. Its roles are
//!   `role_type: jwt`, bound to that audience.
//!
//! One backend type serves both, but a role is either `oidc` or `jwt`, and
//! Vault role names allow the same characters GitLab group paths do (less
//! `/`), so no suffix could tell the two apart without colliding with some
//! group's name: two mounts, the same role names on each.
//!
//! One role per tenant group, named after the group (its GitLab path with
//! `/` as `.`: `acme/dev` → `acme.dev`), bound to `groups` containing that
//! group, whose token carries the policy `tenant-<tenant>-<role>` of every
//! tenant that lists the group. The policies (see [`policy_hcl`]) give each
//! tenant role its rights on the tenant's own paths, `tenant/<tenant>/…` of
//! the `tenant` KV v2 engine.
//!
//! Everything is read first and written only where it differs, on every
//! run (a role or policy someone changed is put back). Roles and
//! policies this step made and no longer wants are deleted (a removed group
//! loses exactly its role; a removed tenant its policies); others' are
//! never touched. Dex's client secret is write-only in Vault, so the sha256
//! of the one written is remembered and it is written again only when it
//! changes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::vault::{self as vault_component, VaultTarget, Writer};
use crate::drivers::vault::Vault;
use crate::engine::{Difference, Handler, StepContext, StepError};
use crate::inventory::{Diagnostic, Loaded, TenantRole};
use crate::plan::diff::REFRESH_AFTER;
use crate::plan::{Step, StepSpec};
use crate::secret::Secret;
use crate::util::unix_now;
use crate::wait::{Poll, Wait};

pub const KIND: &str = "vault-oidc";
pub const STEP_ID: &str = "vault/oidc";
/// Where people sign in (`vault login -method=oidc` uses this path by default).
pub const OIDC_MOUNT: &str = "oidc";
/// Where pipelines log in with an id_token they hold.
pub const JWT_MOUNT: &str = "jwt";
/// Vault's client at Dex: the audience of the id_tokens Vault accepts.
pub const CLIENT_ID: &str = "vault";
/// Its secret, made once by whichever of Dex and this step runs first, 0600
/// in the outputs directory.
pub const CLIENT_SECRET_FILE: &str = "vault/dex-client-secret";
/// Where `vault login -method=oidc` listens for Dex's answer (its default
/// `callbackmode=client`, port 8250).
pub const CLI_REDIRECT_URI: &str = "http://localhost:8250/oidc/callback";
/// The KV v2 engine holding the tenants' own secrets, `<tenant>/…` each.
pub const TENANT_ENGINE: &str = "tenant";

/// The redirect URIs of Vault's Dex client: the UI's callback under Vault's
/// own address, and the CLI's local listener.
pub fn redirect_uris(vault_url: &str) -> Vec<String> {
    vec![
        format!(
            "{}/ui/vault/auth/{OIDC_MOUNT}/oidc/callback",
            vault_url.trim_end_matches('/')
        ),
        CLI_REDIRECT_URI.to_string(),
    ]
}

/// The Vault role of a group: its name with `/` as `.`, if that is a Vault
/// role name (letters, digits, `_`, `-`, `.`; a letter, digit or `_` at
/// both ends).
pub fn role_name(group: &str) -> Option<String> {
    let name = group.replace('/', ".");
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = !name.is_empty()
        && name.chars().all(|c| word(c) || c == '-' || c == '.')
        && name.starts_with(word)
        && name.ends_with(word);
    ok.then_some(name)
}

/// The policy of a role in a tenant.
pub fn policy_name(tenant: &str, role: TenantRole) -> String {
    format!("tenant-{tenant}-{}", role.as_str())
}

/// What a tenant role may do on the tenant's paths in the `tenant` KV v2
/// engine (`tenant/data/<tenant>/…` holds the values, `tenant/metadata/…`
/// the names and versions):
///
/// * viewer: list the secrets and read their metadata (names, versions,
///   dates), never a value;
/// * developer: also read values and write new versions (create, update,
///   patch); nothing is deleted;
/// * admin: also delete versions and whole secrets, undelete, destroy, and
///   change metadata (max versions, custom metadata).
pub fn policy_hcl(tenant: &str, role: TenantRole) -> String {
    let e = TENANT_ENGINE;
    match role {
        TenantRole::Viewer => format!("path \"{e}/metadata/{tenant}/*\" {{ capabilities = [\"read\", \"list\"] }}\n"),
        TenantRole::Developer => format!(
            "path \"{e}/metadata/{tenant}/*\" {{ capabilities = [\"read\", \"list\"] }}\n\
             path \"{e}/data/{tenant}/*\" {{ capabilities = [\"create\", \"read\", \"update\", \"patch\"] }}\n"
        ),
        TenantRole::Admin => format!(
            "path \"{e}/metadata/{tenant}/*\" {{ capabilities = [\"read\", \"list\", \"update\", \"patch\", \"delete\"] }}\n\
             path \"{e}/data/{tenant}/*\" {{ capabilities = [\"create\", \"read\", \"update\", \"patch\", \"delete\"] }}\n\
             path \"{e}/delete/{tenant}/*\" {{ capabilities = [\"update\"] }}\n\
             path \"{e}/undelete/{tenant}/*\" {{ capabilities = [\"update\"] }}\n\
             path \"{e}/destroy/{tenant}/*\" {{ capabilities = [\"update\"] }}\n"
        ),
    }
}

/// One role (on both mounts): the group Dex must report and the policies
/// its token gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupRole {
    pub group: String,
    pub policies: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VaultOidcSpec {
    pub vault: VaultTarget,
    /// Dex's issuer, also the discovery URL.
    pub issuer: String,
    pub client_id: String,
    pub redirect_uris: Vec<String>,
    /// Role name -> role.
    pub roles: BTreeMap<String, GroupRole>,
    /// Policy name -> HCL: every role of every tenant that has groups.
    pub policies: BTreeMap<String, String>,
    pub token_ttl: u64,
}

impl StepSpec for VaultOidcSpec {
    const KIND: &'static str = KIND;
}

/// Role name -> role.
pub type Roles = BTreeMap<String, GroupRole>;
/// Policy name -> HCL.
pub type Policies = BTreeMap<String, String>;

/// The roles and policies the tenants' groups ask for; a group that cannot
/// name a role, or two groups that would name the same one, are errors.
pub fn roles_and_policies(loaded: &Loaded) -> Result<(Roles, Policies), Vec<Diagnostic>> {
    let mut roles: BTreeMap<String, GroupRole> = BTreeMap::new();
    let mut policies = BTreeMap::new();
    let mut problems = Vec::new();
    for (i, tenant) in loaded.inventory.tenants.iter().enumerate() {
        if tenant.groups.is_empty() {
            continue;
        }
        for role in TenantRole::ALL {
            policies.insert(policy_name(&tenant.name, role), policy_hcl(&tenant.name, role));
        }
        for (j, g) in tenant.groups.iter().enumerate() {
            let path = format!("tenants[{i}].groups[{j}].name");
            let Some(name) = role_name(&g.name) else {
                problems.push(
                    Diagnostic::error(&path, format!("group `{}` cannot name a Vault role", g.name))
                        .with_hint("a GitLab group path: letters, digits, `_`, `-`, `.` and `/`")
                        .at(loaded.spans.value(&path)),
                );
                continue;
            };
            let entry = roles.entry(name.clone()).or_insert_with(|| GroupRole {
                group: g.name.clone(),
                policies: Vec::new(),
            });
            if entry.group != g.name {
                problems.push(
                    Diagnostic::error(
                        &path,
                        format!(
                            "groups `{}` and `{}` would both sign in to Vault as role `{name}`",
                            entry.group, g.name
                        ),
                    )
                    .with_hint("Vault role names cannot hold `/`, which becomes `.`; rename one of the groups")
                    .at(loaded.spans.value(&path)),
                );
                continue;
            }
            entry.policies.push(policy_name(&tenant.name, g.role));
        }
    }
    for role in roles.values_mut() {
        role.policies.sort();
        role.policies.dedup();
    }
    match problems.is_empty() {
        true => Ok((roles, policies)),
        false => Err(problems),
    }
}

/// Planned when Vault is configured by us, Dex is installed and some tenant
/// has groups. Needs Dex's step (Vault checks Dex's discovery document when
/// configured) and Traefik's, which Dex is reached through.
pub fn plan(loaded: &Loaded, steps: &mut Vec<Step>) -> Result<(), Vec<Diagnostic>> {
    let (true, Some(vault)) = (wanted(loaded), vault_component::target(loaded)) else {
        return Ok(());
    };
    let Some(dex_step) = steps
        .iter()
        .find(|s| s.id.starts_with("stack/dex/"))
        .map(|s| s.id.clone())
    else {
        // No Dex to sign in through: validation says so.
        return Ok(());
    };
    let (roles, policies) = roles_and_policies(loaded)?;
    let domain = loaded.inventory.settings.domain.clone().unwrap_or_default();
    let spec = VaultOidcSpec {
        issuer: crate::components::endpoints::dex_issuer(&domain),
        client_id: CLIENT_ID.into(),
        redirect_uris: redirect_uris(&vault.url),
        vault,
        roles,
        policies,
        token_ttl: 3600,
    };
    let mut needs = vec![
        vault_component::STEP_ID.to_string(),
        crate::components::certificates::STEP_ID.to_string(),
        dex_step,
    ];
    needs.extend(
        steps
            .iter()
            .filter(|s| s.id.starts_with("stack/traefik/"))
            .map(|s| s.id.clone()),
    );
    steps.push(Step::of(STEP_ID, "Vault sign-in through Dex for the tenants' groups", &spec).needs(needs));
    Ok(())
}

/// Whether Vault gets sign-in through Dex, and Dex a client for Vault: the
/// Vault is one we configure and some tenant has groups (which validation
/// allows only with Dex).
pub fn wanted(loaded: &Loaded) -> bool {
    vault_component::target(loaded).is_some() && loaded.inventory.tenants.iter().any(|t| !t.groups.is_empty())
}

fn mounts() -> [(&'static str, &'static str); 2] {
    [(OIDC_MOUNT, "oidc"), (JWT_MOUNT, "jwt")]
}

/// A role as Vault should hold it on `mount`.
fn role_body(spec: &VaultOidcSpec, mount: &str, role: &GroupRole) -> Value {
    let mut body = json!({
        "role_type": if mount == OIDC_MOUNT { "oidc" } else { "jwt" },
        "bound_audiences": [spec.client_id],
        "user_claim": "sub",
        "groups_claim": "groups",
        "bound_claims": {"groups": [role.group]},
        "claim_mappings": {"email": "email", "name": "name"},
        "token_policies": role.policies,
        "token_ttl": spec.token_ttl,
    });
    if mount == OIDC_MOUNT {
        body["allowed_redirect_uris"] = json!(spec.redirect_uris);
        // Without the groups scope Dex leaves the groups claim out.
        body["oidc_scopes"] = json!(["email", "groups", "profile"]);
    }
    body
}

/// The write-ahead record of enabling the mount at `path`.
fn mount_intent(path: &str) -> String {
    format!("mount {path}")
}

/// Whether the live mount (from `sys/auth`) carries the marker of one of
/// our records: made by this step even if the run that made it died
/// before recording it.
fn marked_ours(ctx: &StepContext, path: &str, live: &Value) -> bool {
    let description = live["description"].as_str().unwrap_or_default();
    ctx.intents
        .list(&mount_intent(path))
        .iter()
        .any(|i| description.contains(&format!("[{}]", i.marker)))
}

/// A mount's config as Vault should hold it, without the client secret
/// (which Vault never shows).
fn config_body(spec: &VaultOidcSpec, path: &str, ca: &str) -> Value {
    let mut body = json!({
        "oidc_discovery_url": spec.issuer,
        "oidc_discovery_ca_pem": ca,
        "bound_issuer": spec.issuer,
    });
    if path == OIDC_MOUNT {
        body["oidc_client_id"] = json!(spec.client_id);
    }
    body
}

/// The first field of a mount's config that differs from `wanted` (the
/// CA compared without surrounding whitespace).
fn config_differs(live: &Value, wanted: &Value, ca: &str) -> Option<String> {
    let ca_same = live["oidc_discovery_ca_pem"].as_str().map(str::trim) == Some(ca.trim());
    let mut rest = wanted.clone();
    rest.as_object_mut().map(|o| o.remove("oidc_discovery_ca_pem"));
    vault_component::differing_field(live, &rest).or_else(|| (!ca_same).then(|| "oidc_discovery_ca_pem".to_string()))
}

/// The auth mount at `path` of `kind`: enabled if missing, with the marker
/// of a record made first (true: ours), an error if something else is there.
async fn ensure_mount(
    ctx: &StepContext,
    w: &mut Writer<'_>,
    auths: &Value,
    path: &str,
    kind: &str,
) -> Result<bool, StepError> {
    let live = &auths["data"][format!("{path}/")];
    if live.is_null() {
        let what = mount_intent(path);
        let intent = ctx.intents.begin(&what, json!({"path": path})).await?;
        let description = format!("Sign-in through Dex, made by nautes-install [{}]", intent.marker);
        w.write(
            &format!("sys/auth/{path}"),
            json!({"type": kind, "description": description}),
        )
        .await?;
        ctx.intents.settle(&what, &intent.marker, json!({"path": path})).await?;
        return Ok(true);
    }
    if live["type"] != kind {
        return Err(StepError::new(format!(
            "Vault auth path {path}/ is already used by a {} method, not {kind}",
            live["type"]
        )));
    }
    Ok(marked_ours(ctx, path, live))
}

/// Write a mount's config, waiting while Vault cannot yet read Dex's
/// discovery document (Dex or its ingress still starting).
async fn write_config(
    ctx: &StepContext,
    vault: &Vault,
    token: &Secret,
    path: &str,
    body: &Value,
) -> Result<(), StepError> {
    Wait::for_(format!("Vault to accept Dex as the issuer of {path}"), ctx.limits.rollout)
        .every(Duration::from_secs(1))
        .hint("Vault reads Dex's discovery document over our CA: check that Dex is up and that Vault resolves and reaches its host")
        .until(|| async {
            match vault.write(path, token, body).await {
                Ok(_) => Ok(Poll::Done(())),
                Err(e) if e.contains("error checking oidc discovery URL") => Ok(Poll::Pending(e)),
                Err(e) => Err(StepError::new(e)),
            }
        })
        .await
}

/// A mount this step did not enable that already signs users in against
/// another issuer (or keys of its own) is someone else's sign-in: it is not
/// taken over.
fn refuse_foreign(path: &str, live: &Value, issuer: &str) -> Result<(), StepError> {
    if live["oidc_discovery_url"] == json!(issuer) {
        return Ok(());
    }
    let text = |k: &str| live[k].as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let against = text("oidc_discovery_url").or_else(|| text("jwks_url")).or_else(|| {
        live["jwt_validation_pubkeys"]
            .as_array()
            .filter(|a| !a.is_empty())
            .map(|_| "public keys of its own".to_string())
    });
    match against {
        Some(against) => Err(StepError::new(format!(
            "Vault auth path {path}/ already signs users in against {against}, and nautes-install did not set it up: \
             it does not take over another sign-in (disable that mount, or enable it at another path)"
        ))),
        None => Ok(()),
    }
}

/// The strings of a recorded list.
fn recorded(outputs: &Value, key: &str) -> BTreeSet<String> {
    outputs[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

fn secret_sha(secret: &Secret) -> String {
    crate::util::hex(&<sha2::Sha256 as sha2::Digest>::digest(secret.expose().as_bytes()))
}

/// Our CA, which Dex's certificate chains to.
fn ca_pem(ctx: &StepContext) -> Result<String, StepError> {
    let path = ctx
        .needs_outputs
        .get(crate::components::certificates::STEP_ID)
        .and_then(|pki| pki["ca"]["cert"].as_str())
        .ok_or_else(|| StepError::new("the certificates step recorded no CA"))?;
    std::fs::read_to_string(path).map_err(|e| StepError::new(format!("cannot read our CA, {path}: {e}")))
}

pub struct VaultOidcHandler;

#[async_trait]
impl Handler for VaultOidcHandler {
    type Spec = VaultOidcSpec;

    async fn apply(&self, ctx: &StepContext, spec: &VaultOidcSpec) -> Result<Value, StepError> {
        let ca = ca_pem(ctx)?;
        let secret = crate::components::stack::runtime::kept_secret(ctx, CLIENT_SECRET_FILE)?;
        let sha = secret_sha(&secret);
        let previous = &ctx.previous_outputs;
        let (vault, token) = vault_component::connect(ctx, &spec.vault)?;
        let mut w = Writer::new(&vault, &token);

        let auths = w.read("sys/auth").await?.unwrap_or_default();
        let mut enabled = recorded(previous, "mountsEnabled");
        for (path, kind) in mounts() {
            if ensure_mount(ctx, &mut w, &auths, path, kind).await? {
                enabled.insert(path.to_string());
            }
        }
        for (path, _) in mounts() {
            let config_path = format!("auth/{path}/config");
            let live = w.read(&config_path).await?.unwrap_or_default();
            let live = &live["data"];
            if !enabled.contains(path) {
                refuse_foreign(path, live, &spec.issuer)?;
            }
            let mut wanted = config_body(spec, path, &ca);
            let same = config_differs(live, &wanted, &ca).is_none()
                && (path != OIDC_MOUNT || previous["clientSecretSha256"].as_str() == Some(sha.as_str()));
            if path == OIDC_MOUNT {
                wanted["oidc_client_secret"] = json!(secret.expose());
            }
            if !same {
                write_config(ctx, &vault, &token, &config_path, &wanted).await?;
                w.writes.push(config_path);
            }
        }

        for (name, hcl) in &spec.policies {
            let path = format!("sys/policies/acl/{name}");
            let live = w.read(&path).await?;
            if live.as_ref().and_then(|v| v["data"]["policy"].as_str()) != Some(hcl.as_str()) {
                w.write(&path, json!({ "policy": hcl })).await?;
            }
        }
        for (name, role) in &spec.roles {
            for (mount, _) in mounts() {
                w.ensure_fields(&format!("auth/{mount}/role/{name}"), role_body(spec, mount, role))
                    .await?;
            }
        }
        // What an earlier run made and this inventory no longer asks for.
        for name in recorded(previous, "roles") {
            if !spec.roles.contains_key(&name) {
                for (mount, _) in mounts() {
                    w.delete(&format!("auth/{mount}/role/{name}")).await?;
                }
            }
        }
        for name in recorded(previous, "policies") {
            if !spec.policies.contains_key(&name) {
                w.delete(&format!("sys/policies/acl/{name}")).await?;
            }
        }
        if !w.writes.is_empty() {
            ctx.progress(format!("Vault sign-in through Dex: {} changes", w.writes.len()));
        }
        Ok(json!({
            "mounts": mounts().iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            "mountsEnabled": enabled,
            "roles": spec.roles.keys().collect::<Vec<_>>(),
            "policies": spec.policies.keys().collect::<Vec<_>>(),
            "clientSecretSha256": sha,
            "vaultWritten": w.writes,
            // Re-checked on every run, as Vault's own configuration is: a
            // role or policy someone changed is put back.
            REFRESH_AFTER: unix_now(),
        }))
    }

    /// What differs from what `apply` would make, read only: the mounts,
    /// their config (not the client secret, which Vault never shows), the
    /// policies and roles, and roles and policies of ours no longer wanted.
    async fn drift(&self, ctx: &StepContext, spec: &VaultOidcSpec) -> Result<Option<Vec<Difference>>, StepError> {
        use crate::engine::Change::{Changed, Extra, Missing};
        let ca = ca_pem(ctx)?;
        let (vault, token) = vault_component::connect(ctx, &spec.vault)?;
        let w = Writer::new(&vault, &token);
        let mut out = Vec::new();
        let mut differ = |object: String, change, field: Option<String>| out.push(Difference { object, change, field });
        let auths = w.read("sys/auth").await?.unwrap_or_default();
        let mut mounted = Vec::new();
        for (path, kind) in mounts() {
            let live = &auths["data"][format!("{path}/")];
            if live.is_null() {
                differ(format!("Vault auth method {path}/"), Missing, None);
            } else if live["type"] != kind {
                differ(format!("Vault auth method {path}/"), Changed, Some("type".into()));
            } else {
                mounted.push(path);
            }
        }
        for path in &mounted {
            let live = w.read(&format!("auth/{path}/config")).await?.unwrap_or_default();
            if let Some(field) = config_differs(&live["data"], &config_body(spec, path, &ca), &ca) {
                differ(format!("Vault auth config {path}/"), Changed, Some(field));
            }
        }
        for (name, hcl) in &spec.policies {
            match w.read(&format!("sys/policies/acl/{name}")).await? {
                None => differ(format!("Vault policy {name}"), Missing, None),
                Some(v) if v["data"]["policy"].as_str() != Some(hcl.as_str()) => {
                    differ(format!("Vault policy {name}"), Changed, Some("policy".into()))
                }
                Some(_) => {}
            }
        }
        for (name, role) in &spec.roles {
            for path in &mounted {
                let object = format!("Vault role {path}/{name}");
                match w.read(&format!("auth/{path}/role/{name}")).await? {
                    None => differ(object, Missing, None),
                    Some(live) => {
                        if let Some(field) =
                            vault_component::differing_field(&live["data"], &role_body(spec, path, role))
                        {
                            differ(object, Changed, Some(field));
                        }
                    }
                }
            }
        }
        for name in recorded(&ctx.previous_outputs, "roles") {
            if spec.roles.contains_key(&name) {
                continue;
            }
            for path in &mounted {
                if w.read(&format!("auth/{path}/role/{name}")).await?.is_some() {
                    differ(format!("Vault role {path}/{name}"), Extra, None);
                }
            }
        }
        for name in recorded(&ctx.previous_outputs, "policies") {
            if !spec.policies.contains_key(&name) && w.read(&format!("sys/policies/acl/{name}")).await?.is_some() {
                differ(format!("Vault policy {name}"), Extra, None);
            }
        }
        Ok(Some(out))
    }

    /// Our roles and policies go; so do the mounts this step enabled (by
    /// its outputs or their marker; with anything else on them), not ones
    /// it found.
    async fn destroy(&self, ctx: &StepContext, spec: &VaultOidcSpec, outputs: &Value) -> Result<(), StepError> {
        let (vault, token) = vault_component::connect(ctx, &spec.vault)?;
        let mut w = Writer::new(&vault, &token);
        let auths = w.read("sys/auth").await?.unwrap_or_default();
        let mut enabled = recorded(outputs, "mountsEnabled");
        for (path, _) in mounts() {
            if marked_ours(ctx, path, &auths["data"][format!("{path}/")]) {
                enabled.insert(path.to_string());
            }
        }
        for name in recorded(outputs, "roles") {
            for (mount, _) in mounts() {
                if !enabled.contains(mount) {
                    w.delete(&format!("auth/{mount}/role/{name}")).await?;
                }
            }
        }
        for mount in &enabled {
            w.delete(&format!("sys/auth/{mount}")).await?;
        }
        for name in recorded(outputs, "policies") {
            w.delete(&format!("sys/policies/acl/{name}")).await?;
        }
        ctx.intents.forget_all().await
    }
}

/// Vault's sign-in through Dex, planned after the stack (it needs Dex's step).
pub struct VaultOidc;

impl super::Component for VaultOidc {
    fn plan(&self, loaded: &Loaded, steps: &mut Vec<Step>) -> Result<(), Vec<Diagnostic>> {
        plan(loaded, steps)
    }

    fn handlers(&self, registry: &mut crate::engine::Registry) {
        registry.add(VaultOidcHandler);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(tenants: &str) -> Loaded {
        let text = format!(
            "apiVersion: install.nautes.io/v1alpha1\nkind: Inventory\nmetadata:\n  name: t\n\
             settings:\n  domain: example.com\n\
             clusters:\n  - name: host\n    type: external\n    external:\n      kubeconfig: host.kubeconfig\n    usage: [host]\n\
             tenants:\n{tenants}\
             components:\n  vault:\n    placement: external\n    external:\n      url: https://vault.example.com:8200\n\
             \x20 gitlab:\n    placement: external\n    external:\n      url: https://gitlab.example.com\n      token: {{ file: t }}\n    values:\n      group: acme\n\
             \x20 dex: {{}}\n"
        );
        crate::inventory::load_str(std::path::Path::new("inventory.yaml"), &text).unwrap_or_else(|r| panic!("{r:?}"))
    }

    const TENANTS: &str = "  - name: acme\n    cluster: host\n    groups:\n      - {name: acme/dev, role: developer}\n      - {name: shared, role: viewer}\n\
                           \x20 - name: other\n    cluster: host\n    groups:\n      - {name: shared, role: admin}\n";

    #[test]
    fn a_group_is_one_role_with_the_policies_of_every_tenant_listing_it() {
        let (roles, policies) = roles_and_policies(&loaded(TENANTS)).unwrap();
        assert_eq!(roles["acme.dev"].policies, ["tenant-acme-developer"]);
        assert_eq!(roles["shared"].policies, ["tenant-acme-viewer", "tenant-other-admin"]);
        assert_eq!(roles.len(), 2);
        assert_eq!(policies.len(), 6, "three roles for each tenant with groups");
    }

    #[test]
    fn groups_that_would_share_a_role_name_or_cannot_name_one_are_errors_at_their_position() {
        let tenants = "  - name: acme\n    cluster: host\n    groups:\n      - {name: acme/dev, role: developer}\n      - {name: acme.dev, role: viewer}\n      - {name: 'a b', role: viewer}\n";
        let problems = roles_and_policies(&loaded(tenants)).unwrap_err();
        let text: Vec<String> = problems.iter().map(|d| format!("{} {}", d.path, d.message)).collect();
        assert_eq!(problems.len(), 2, "{text:?}");
        assert!(
            text[0].starts_with("tenants[0].groups[1].name groups `acme/dev` and `acme.dev`"),
            "{text:?}"
        );
        assert!(
            text[1].starts_with("tenants[0].groups[2].name group `a b` cannot name a Vault role"),
            "{text:?}"
        );
        assert!(problems.iter().all(|d| d.span.is_some()), "each at its line and column");
    }

    #[test]
    fn dex_gets_vaults_client_and_the_step_waits_for_dex_only_when_tenants_have_groups() {
        let plan = |tenants: &str| crate::components::plan_steps(&loaded(tenants)).unwrap();
        let dex_clients = |steps: &[Step]| {
            steps.iter().find(|s| s.id == "stack/dex/host").unwrap().spec["runtime"]["clients"].clone()
        };
        let steps = plan(TENANTS);
        assert!(dex_clients(&steps).as_array().unwrap().contains(&json!(CLIENT_ID)));
        let step = steps.iter().find(|s| s.id == STEP_ID).expect("vault/oidc planned");
        for need in ["vault/configure", "stack/dex/host"] {
            assert!(step.needs.iter().any(|n| n == need), "{:?}", step.needs);
        }
        assert_eq!(
            step.spec["redirectUris"],
            json!([
                "https://vault.example.com:8200/ui/vault/auth/oidc/oidc/callback",
                CLI_REDIRECT_URI
            ])
        );
        let steps = plan("  - name: acme\n    cluster: host\n");
        assert!(!steps.iter().any(|s| s.id == STEP_ID));
        assert!(!dex_clients(&steps).as_array().unwrap().contains(&json!(CLIENT_ID)));
    }

    #[test]
    fn group_paths_name_vault_roles_and_other_names_do_not() {
        assert_eq!(role_name("acme/dev").as_deref(), Some("acme.dev"));
        assert_eq!(role_name("acme-ops_1").as_deref(), Some("acme-ops_1"));
        // Vault's role name pattern: a word character at both ends, no spaces.
        for bad in ["", "acme dev", "acme/", "-acme", "acme:dev", "ä"] {
            assert_eq!(role_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn redirect_uris_are_the_ui_callback_under_vaults_address_and_the_cli_listener() {
        assert_eq!(
            redirect_uris("https://10.0.0.5:8200/"),
            [
                "https://10.0.0.5:8200/ui/vault/auth/oidc/oidc/callback",
                "http://localhost:8250/oidc/callback"
            ]
        );
    }
}
