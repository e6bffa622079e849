//! `outputs`: what the install produced and where it is — cluster and
//! virtual-cluster endpoints with their kubeconfigs, the CA and
//! certificates, Vault and where its keys are — read from the state file.
//! Secret values are shown only with `--show-secrets`.

use serde_json::{json, Value};

use super::inspect::load_state;
use crate::cli::{GlobalArgs, Output};
use crate::exit;
use crate::state::{State, StepStatus};

const HIDDEN: &str = "<hidden; use --show-secrets>";

/// Outputs of every finished step of `kind`, by step id.
fn finished<'a>(state: &'a State, kind: &'a str) -> impl Iterator<Item = (&'a String, &'a Value)> {
    state
        .steps
        .iter()
        .filter(move |(_, r)| r.kind == kind && r.status == StepStatus::Done)
        .map(|(id, r)| (id, &r.outputs))
}

/// The content of a secret file, or the placeholder.
fn secret_file(path: &std::path::Path, show: bool) -> Value {
    if !show {
        return json!(HIDDEN);
    }
    match std::fs::read_to_string(path) {
        Ok(v) => json!(v.trim()),
        Err(e) => json!(format!("<cannot read {}: {e}>", path.display())),
    }
}

/// Beside a cluster's admin kubeconfig, `oidc.kubeconfig`: the same API
/// with the credential of `kubectl oidc-login` (signing in through Dex),
/// for the cluster's users. Written when the cluster's apiserver trusts Dex
/// (its step's `oidc`); the path, or why it could not be written.
fn user_kubeconfig(state: &State, step: &str, outputs: &Value) -> Value {
    use crate::components::kube_oidc;
    let Some(oidc) = state
        .steps
        .get(step)
        .and_then(|r| serde_json::from_value::<kube_oidc::ApiserverOidc>(r.spec["oidc"].clone()).ok())
    else {
        return Value::Null;
    };
    let write = || -> Result<std::path::PathBuf, String> {
        let admin_path = std::path::PathBuf::from(outputs["kubeconfig"].as_str().ok_or("no admin kubeconfig")?);
        let admin: Value = serde_yaml::from_str(
            &std::fs::read_to_string(&admin_path).map_err(|e| format!("{}: {e}", admin_path.display()))?,
        )
        .map_err(|e| format!("{}: {e}", admin_path.display()))?;
        let cluster = &admin["clusters"][0]["cluster"];
        let ca = finished(state, crate::components::certificates::KIND)
            .next()
            .and_then(|(_, o)| o["ca"]["cert"].as_str().map(str::to_string))
            .ok_or("no CA recorded")?;
        let ca = std::fs::read_to_string(&ca).map_err(|e| format!("{ca}: {e}"))?;
        use base64::Engine;
        let login = kube_oidc::LoginSettings {
            issuer_url: oidc.issuer_url.clone(),
            client_id: oidc.client_id.clone(),
            ca_b64: base64::engine::general_purpose::STANDARD.encode(ca),
        };
        let name = step.split('/').nth(1).unwrap_or(step);
        let text = kube_oidc::user_kubeconfig(
            name,
            cluster["server"].as_str().unwrap_or_default(),
            cluster["certificate-authority-data"].as_str().unwrap_or_default(),
            &login,
        );
        let path = admin_path.with_file_name("oidc.kubeconfig");
        crate::util::write_atomic(&path, text.as_bytes(), 0o600).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    };
    match write() {
        Ok(p) => json!(p),
        Err(e) => json!(format!("<cannot write: {e}>")),
    }
}

/// Everything worth knowing, as one JSON document.
fn summary(state: &State, show_secrets: bool) -> Value {
    let clusters: Vec<Value> = finished(state, crate::components::k3s::KUBECONFIG_KIND)
        .map(|(id, o)| {
            json!({"step": id, "endpoint": o["endpoint"], "kubeconfig": o["kubeconfig"],
                   "userKubeconfig": user_kubeconfig(state, id, o)})
        })
        .collect();
    let virtual_clusters: Vec<Value> = finished(state, crate::components::vcluster::KIND)
        .map(|(id, o)| {
            json!({"step": id, "endpoint": o["endpoint"], "kubeconfig": o["kubeconfig"],
                   "userKubeconfig": user_kubeconfig(state, id, o)})
        })
        .collect();
    let tenants: Vec<Value> = finished(state, crate::components::tenants::TENANT_KIND)
        .map(|(id, o)| {
            let names: Vec<&Value> = o["tree"].as_array().into_iter().flatten().map(|n| &n["name"]).collect();
            json!({"step": id, "namespaces": names})
        })
        .collect();
    let pki = finished(state, crate::components::certificates::KIND)
        .next()
        .map(|(_, o)| {
            let certs: serde_json::Map<String, Value> = o["certs"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, c)| {
                    (
                        name.clone(),
                        json!({"cert": c["cert"], "key": c["key"], "notAfter": c["notAfter"]}),
                    )
                })
                .collect();
            json!({"ca": o["ca"]["cert"], "certificates": certs})
        });
    let vault = finished(state, crate::components::vault::KIND).next().map(|(_, o)| {
        let dir = std::path::PathBuf::from(o["secrets"].as_str().unwrap_or_default());
        let keys: Vec<Value> = (1..=10)
            .map(|i| dir.join(format!("unseal-key-{i}")))
            .filter(|p| p.is_file())
            .map(|p| json!({"file": p, "value": secret_file(&p, show_secrets)}))
            .collect();
        let root = dir.join("root-token");
        json!({
            "url": o["url"],
            "unsealKeys": keys,
            "rootToken": if root.is_file() { json!({"file": root, "value": secret_file(&root, show_secrets)}) } else { Value::Null },
        })
    });
    let gitlab = finished(state, crate::components::gitlab::KIND).next().map(|(_, o)| {
        // Credentials kept in files can be shown; those in Vault are named by path.
        let credentials: serde_json::Map<String, Value> = o["credentials"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, location)| {
                let at = location.as_str().unwrap_or_default();
                let path = std::path::Path::new(at);
                let value = if path.is_absolute() && path.is_file() {
                    secret_file(path, show_secrets)
                } else {
                    Value::Null
                };
                (name.clone(), json!({"at": at, "value": value}))
            })
            .collect();
        // A GitLab we installed has a root password, in a 0600 file.
        let root_password = state
            .steps
            .get(crate::components::gitlab::HOST_STEP_ID)
            .filter(|r| r.status == StepStatus::Done)
            .and_then(|r| r.outputs["rootPasswordFile"].as_str())
            .map(|f| json!({"file": f, "value": secret_file(std::path::Path::new(f), show_secrets)}));
        json!({
            "url": o["url"],
            "rootPassword": root_password,
            "repository": o["repository"],
            "oauthClientId": o["oauthApp"]["clientId"],
            "adminTokenExpires": o["adminToken"]["expiresAt"],
            "baseOperatorTokenExpires": o["baseOperatorToken"]["expiresAt"],
            "credentials": credentials,
        })
    });
    let endpoints: Vec<Value> = finished(state, crate::components::stack::health::KIND)
        .flat_map(|(_, o)| o["endpoints"].as_array().cloned().unwrap_or_default())
        .collect();
    // What each installed component's catalog entry lists (see the health step).
    let components: Vec<Value> = finished(state, crate::components::stack::health::KIND)
        .flat_map(|(_, o)| o["components"].as_array().cloned().unwrap_or_default())
        .map(|mut c| {
            if let Some(file) = c["file"].as_str().map(std::path::PathBuf::from) {
                c["value"] = secret_file(&file, show_secrets);
            }
            c
        })
        .collect();
    json!({
        "endpoints": endpoints,
        "components": components,
        "clusters": clusters,
        "virtualClusters": virtual_clusters,
        "tenants": tenants,
        "pki": pki,
        "vault": vault,
        "gitlab": gitlab,
    })
}

fn print_text(s: &Value) {
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let text = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
    let endpoints = list(&s["endpoints"]);
    if !endpoints.is_empty() {
        println!("Endpoints (checked healthy by the last run):");
        for e in endpoints {
            println!("  {:<18} {}", text(&e["name"]), text(&e["url"]));
        }
    }
    let components = list(&s["components"]);
    if !components.is_empty() {
        println!("Components:");
        for c in components {
            let what = format!("{} {}", text(&c["component"]), text(&c["name"]));
            match c["file"].as_str() {
                Some(f) => println!("  {what:<28} {f}: {}", text(&c["value"])),
                None => println!("  {what:<28} {}", text(&c["url"])),
            }
        }
    }
    for (title, key) in [("Clusters", "clusters"), ("Virtual clusters", "virtualClusters")] {
        for c in list(&s[key]) {
            println!("{title}: {}", text(&c["step"]));
            println!("  endpoint:   {}", text(&c["endpoint"]));
            println!("  kubeconfig: {}", text(&c["kubeconfig"]));
            if !c["userKubeconfig"].is_null() {
                println!("  users (kubectl oidc-login): {}", text(&c["userKubeconfig"]));
            }
        }
    }
    for t in list(&s["tenants"]) {
        let names: Vec<String> = list(&t["namespaces"]).iter().map(text).collect();
        println!("Tenant {}: {}", text(&t["step"]), names.join(", "));
    }
    if !s["pki"].is_null() {
        println!("CA certificate: {}", text(&s["pki"]["ca"]));
        for (name, c) in s["pki"]["certificates"].as_object().into_iter().flatten() {
            println!("  {name}: {} (key {})", text(&c["cert"]), text(&c["key"]));
        }
    }
    if !s["vault"].is_null() {
        println!("Vault: {}", text(&s["vault"]["url"]));
        if let Some(root) = s["vault"]["rootToken"].as_object() {
            println!("  root token ({}): {}", text(&root["file"]), text(&root["value"]));
        }
        for k in list(&s["vault"]["unsealKeys"]) {
            println!("  unseal key ({}): {}", text(&k["file"]), text(&k["value"]));
        }
    }
    if !s["gitlab"].is_null() {
        let g = &s["gitlab"];
        println!("GitLab: {}", text(&g["url"]));
        if let Some(root) = g["rootPassword"].as_object() {
            println!("  root password ({}): {}", text(&root["file"]), text(&root["value"]));
        }
        println!("  tenant repository: {}", text(&g["repository"]));
        println!("  Dex OAuth client id: {}", text(&g["oauthClientId"]));
        println!(
            "  tokens expire: admin {}, base operator {}",
            text(&g["adminTokenExpires"]),
            text(&g["baseOperatorTokenExpires"])
        );
        for (name, c) in g["credentials"].as_object().into_iter().flatten() {
            match c["value"].as_str() {
                Some(v) => println!("  {name} ({}): {v}", text(&c["at"])),
                None => println!("  {name}: {}", text(&c["at"])),
            }
        }
    }
}

pub fn outputs(g: &GlobalArgs, show_secrets: bool) -> u8 {
    let state = match load_state(g) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let s = summary(&state, show_secrets);
    if g.output == Output::Json {
        println!("{s}");
    } else if state.steps.is_empty() {
        eprintln!("nothing installed yet in {}", g.workdir.display());
    } else {
        print_text(&s);
    }
    exit::OK
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StepRecord;

    /// A component's credential file from the health step's outputs is
    /// shown masked, its content only with --show-secrets; URLs as they are.
    #[test]
    fn component_outputs_come_from_the_health_step_and_files_are_masked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cookie-secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        let mut state = State::default();
        state.steps.insert(
            "health".into(),
            StepRecord {
                kind: crate::components::stack::health::KIND.into(),
                description: String::new(),
                needs: Vec::new(),
                after: Vec::new(),
                spec: Value::Null,
                settings: Value::Null,
                fingerprint: String::new(),
                status: StepStatus::Done,
                revision: 1,
                needs_revisions: Default::default(),
                outputs: json!({"components": [
                    {"component": "oauth2Proxy", "name": "sign-in", "url": "https://auth.x/oauth2/sign_in"},
                    {"component": "oauth2Proxy", "name": "cookie secret", "file": file},
                ]}),
                started_at: None,
                finished_at: None,
                attempts: 1,
                last_error: None,
            },
        );
        let masked = summary(&state, false);
        assert_eq!(masked["components"][0]["url"], "https://auth.x/oauth2/sign_in");
        assert_eq!(masked["components"][1]["value"], HIDDEN);
        assert!(!masked.to_string().contains("s3cret"));
        assert_eq!(summary(&state, true)["components"][1]["value"], "s3cret");
    }
}
