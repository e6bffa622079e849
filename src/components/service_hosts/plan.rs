//! The inventory's `placement: host` components turned into steps: for each
//! of Vault and GitLab, the artifacts step that fetches its package and the
//! `vault/host` or `gitlab/host` step that installs it. Validation lives
//! here too (the host named and known, `values` of the right type), each
//! problem reported with its inventory path; a host a Terraform module has
//! yet to create is planned on the run after that module.

use serde_json::{json, Map, Value};

use super::{url_host, Service, ServiceHostSpec, VaultServer, KIND};
use crate::components::endpoints;
use crate::components::{certificates, infrastructure};
use crate::inventory::spans::push_key;
use crate::inventory::{Component, Diagnostic, Loaded, Placement};
use crate::plan::Step;
use crate::steps::hosts::{self, HostConn};
use crate::steps::release_files::files_step;

/// GitLab services Nautes does not need, off unless `values.<name>: true`.
const GITLAB_OPTIONAL: [&str; 5] = ["registry", "pages", "kas", "mattermost", "monitoring"];

/// Plan `vault/host` and `gitlab/host` for the components placed on a host.
pub fn plan(loaded: &Loaded, steps: &mut Vec<Step>) -> Result<(), Vec<Diagnostic>> {
    let mut problems = Vec::new();
    for service in [Service::Vault, Service::Gitlab] {
        let Some(c) = service
            .component(loaded)
            .filter(|c| c.enabled && c.placement == Placement::Host)
        else {
            continue;
        };
        if let Err(mut p) = plan_one(loaded, service, c, steps) {
            problems.append(&mut p);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn plan_one(loaded: &Loaded, service: Service, c: &Component, steps: &mut Vec<Step>) -> Result<(), Vec<Diagnostic>> {
    let base = push_key("components", service.key());
    let distribution = c.vault_distribution();
    let title = service.title(distribution);
    let Some(host) = &c.host else {
        return Err(vec![Diagnostic::error(
            &base,
            format!("{title} is placed on a host (`placement: host`) but names none"),
        )
        .with_hint(format!(
            "add `host: <name>` naming the entry of `hosts` to install {title} on"
        ))
        .at(loaded.spans.value(&base))]);
    };
    let Some(conn) = hosts::connection(loaded, host) else {
        if infrastructure::provider_step(loaded, host).is_some() {
            // A Terraform module creates it: planned once that has run.
            return Ok(());
        }
        let path = push_key(&base, "host");
        return Err(vec![Diagnostic::error(&path, format!("unknown host `{host}`"))
            .with_hint(format!(
                "define `{host}` under `hosts` (or in a Terraform module's `provides`), or name a host that is defined"
            ))
            .at(loaded.spans.value(&path).or(loaded.spans.value(&base)))]);
    };
    let mut problems = Vec::new();
    let keep_data = flag(loaded, &base, c, "keepDataOnDestroy", &mut problems);
    let version = c
        .version
        .clone()
        .unwrap_or_else(|| service.default_version(distribution).to_string());
    let file = service.package(distribution, &version);
    let package = file.name.clone();
    let artifact = match files_step(
        loaded,
        service.release_name(distribution),
        title,
        &version,
        vec![file],
        &push_key(&base, "version"),
    ) {
        Ok(a) => a,
        Err(d) => {
            problems.push(d);
            return Err(problems);
        }
    };
    let package_sha256 = artifact.spec["files"][0]["sha256"].as_str().map(str::to_string);
    let artifacts_id = artifact.id.clone();
    if !steps.iter().any(|s| s.id == artifacts_id) {
        steps.push(artifact);
    }
    let waive = hosts::find(loaded, host).map(|h| h.waive.clone()).unwrap_or_default();
    let mut vars = Map::new();
    vars.insert("waive".into(), json!(waive));
    let url = match service {
        Service::Vault => vault_vars(VaultServer::of(distribution), &conn, &version, &mut vars),
        Service::Gitlab => gitlab_vars(loaded, &base, c, &conn, &version, &mut vars, &mut problems),
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let spec = ServiceHostSpec {
        service,
        distribution: (service == Service::Vault).then_some(distribution),
        version: version.clone(),
        host: conn,
        artifacts: artifacts_id.clone(),
        package,
        package_sha256,
        url,
        keep_data_on_destroy: keep_data,
        vars,
    };
    steps.push(
        Step::new(
            service.step_id(),
            KIND,
            format!("{title} {version} on host {host}"),
            json!(spec),
        )
        .needs([certificates::STEP_ID.to_string(), artifacts_id])
        .needs(infrastructure::provider_step(loaded, host)),
    );
    Ok(())
}

/// `values.<key>` of the component at `base`, which must be true or false
/// (absent is false); anything else is a problem, and false.
fn flag(loaded: &Loaded, base: &str, c: &Component, key: &str, problems: &mut Vec<Diagnostic>) -> bool {
    match c.values.get(key) {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            let path = push_key(&push_key(base, "values"), key);
            problems.push(
                Diagnostic::error(&path, format!("`{key}` must be true or false, not {other}"))
                    .at(loaded.spans.value(&path)),
            );
            false
        }
    }
}

/// Vault's (or OpenBao's) playbook variables; returns where clients reach it.
fn vault_vars(server: &VaultServer, conn: &HostConn, version: &str, vars: &mut Map<String, Value>) -> String {
    let url = format!("https://{}:8200", url_host(&conn.address));
    vars.insert("vault_server".into(), server.vars());
    vars.insert("vault_version".into(), json!(version));
    vars.insert("vault_node_id".into(), json!(conn.name));
    vars.insert("vault_url".into(), json!(url));
    vars.insert("vault_api_addr".into(), json!(url));
    vars.insert(
        "vault_cluster_addr".into(),
        json!(format!("https://{}:8201", url_host(&conn.internal_address))),
    );
    url
}

/// GitLab's playbook variables, checking its `values` into `problems`;
/// returns where clients reach it.
fn gitlab_vars(
    loaded: &Loaded,
    base: &str,
    c: &Component,
    conn: &HostConn,
    version: &str,
    vars: &mut Map<String, Value>,
    problems: &mut Vec<Diagnostic>,
) -> String {
    // Without a domain, the address: a host name would need DNS the
    // inventory does not promise (both are in the certificate).
    let external = match &loaded.inventory.settings.domain {
        Some(d) => endpoints::GITLAB.host(d),
        None => url_host(&conn.address),
    };
    let url = format!("https://{external}");
    let mut whitelist: Vec<String> = Vec::new();
    for a in [&conn.address, &conn.internal_address] {
        if let Ok(ip) = a.parse::<std::net::IpAddr>() {
            let net = format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 });
            if !whitelist.contains(&net) {
                whitelist.push(net);
            }
        }
    }
    let services: Map<String, Value> = GITLAB_OPTIONAL
        .iter()
        .map(|s| (s.to_string(), json!(flag(loaded, base, c, s, problems))))
        .collect();
    let extra = match c.values.get("gitlabRb") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            let path = push_key(&push_key(base, "values"), "gitlabRb");
            problems.push(
                Diagnostic::error(
                    &path,
                    format!("`gitlabRb` must be text (Ruby lines for gitlab.rb), not {other}"),
                )
                .with_hint("write it as a YAML block: `gitlabRb: |`")
                .at(loaded.spans.value(&path)),
            );
            String::new()
        }
    };
    vars.insert("gitlab_version".into(), json!(version));
    vars.insert("gitlab_external_url".into(), json!(url));
    vars.insert(
        "gitlab_check_url".into(),
        json!(format!("https://{}", url_host(&conn.address))),
    );
    vars.insert("gitlab_monitoring_whitelist".into(), json!(whitelist));
    vars.insert("gitlab_services".into(), Value::Object(services));
    vars.insert("gitlab_rb_extra".into(), json!(extra));
    url
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::components::service_hosts::{GITLAB_STEP_ID, VAULT_STEP_ID};
    use crate::inventory::VaultDistribution;

    fn planned(body: &str) -> Result<Vec<Step>, Vec<Diagnostic>> {
        let src = format!("apiVersion: install.nautes.io/v1alpha1\nkind: Inventory\nmetadata:\n  name: t\n{body}");
        let loaded = crate::inventory::load::load_str(Path::new("/nowhere/inventory.yaml"), &src)
            .unwrap_or_else(|r| panic!("{:?}", r.diagnostics));
        let mut steps = Vec::new();
        plan(&loaded, &mut steps).map(|()| steps)
    }

    const HOSTS: &str = "hosts:\n  - { name: vault-1, address: 10.0.0.5, internalAddress: 10.1.0.5 }\n  - { name: gitlab-1, address: 10.0.0.6 }\n";

    #[test]
    fn plans_one_step_per_service_with_its_package_certificate_and_urls() {
        let steps = planned(&format!(
            "settings: {{ domain: nautes.example.com }}\n{HOSTS}components:\n  vault: {{ placement: host, host: vault-1 }}\n  gitlab:\n    placement: host\n    host: gitlab-1\n    version: 16.3.0-ce.0\n    values: {{ registry: true, keepDataOnDestroy: true }}\n"
        ))
        .unwrap();
        let ids: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "artifacts/vault/1.10.4",
                VAULT_STEP_ID,
                "artifacts/gitlab/16.3.0-ce.0",
                GITLAB_STEP_ID
            ]
        );
        let vault: ServiceHostSpec = serde_json::from_value(steps[1].spec.clone()).unwrap();
        assert_eq!(steps[1].needs, [certificates::STEP_ID, "artifacts/vault/1.10.4"]);
        assert_eq!(vault.distribution, Some(VaultDistribution::Vault));
        assert_eq!(vault.vars["vault_server"]["binary"], "vault");
        assert_eq!(vault.vars["vault_server"]["config_dir"], "/etc/vault.d");
        assert_eq!(vault.vars["vault_server"]["mlock"], true);
        assert_eq!(vault.url, "https://10.0.0.5:8200");
        assert_eq!(vault.package, "vault_1.10.4_linux_amd64.zip");
        assert_eq!(vault.vars["vault_cluster_addr"], "https://10.1.0.5:8201");
        assert_eq!(vault.vars["vault_node_id"], "vault-1");
        assert!(!vault.keep_data_on_destroy);
        let files = &steps[0].spec["files"][0];
        assert_eq!(
            files["url"],
            "https://releases.hashicorp.com/vault/1.10.4/vault_1.10.4_linux_amd64.zip"
        );
        assert_eq!(
            files["sums_url"],
            "https://releases.hashicorp.com/vault/1.10.4/vault_1.10.4_SHA256SUMS"
        );
        let gitlab: ServiceHostSpec = serde_json::from_value(steps[3].spec.clone()).unwrap();
        assert_eq!(gitlab.url, "https://gitlab.nautes.example.com");
        assert_eq!(gitlab.vars["gitlab_check_url"], "https://10.0.0.6");
        assert_eq!(gitlab.vars["gitlab_monitoring_whitelist"], json!(["10.0.0.6/32"]));
        assert_eq!(gitlab.vars["gitlab_services"]["registry"], true);
        assert_eq!(gitlab.vars["gitlab_services"]["kas"], false);
        assert!(gitlab.keep_data_on_destroy);
        assert_eq!(gitlab.distribution, None);
        assert_eq!(gitlab.package, "gitlab-ce_16.3.0-ce.0_amd64.deb");
    }

    #[test]
    fn openbao_is_planned_from_its_own_release_with_its_own_names() {
        let steps = planned(&format!(
            "{HOSTS}components:\n  vault: {{ placement: host, host: vault-1, distribution: openbao }}\n"
        ))
        .unwrap();
        let ids: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["artifacts/openbao/2.7.2", VAULT_STEP_ID]);
        assert_eq!(steps[1].description, "OpenBao 2.7.2 on host vault-1");
        let files = &steps[0].spec["files"][0];
        let release = "https://github.com/openbao/openbao/releases/download/v2.7.2";
        assert_eq!(files["url"], format!("{release}/openbao_2.7.2_linux_amd64.tar.gz"));
        assert_eq!(files["sums_url"], format!("{release}/checksums.txt"));
        assert_eq!(files["sums_name"], "openbao_2.7.2_linux_amd64.tar.gz");
        assert_eq!(files["bundle_path"], "openbao/2.7.2/openbao_2.7.2_linux_amd64.tar.gz");
        let spec: ServiceHostSpec = serde_json::from_value(steps[1].spec.clone()).unwrap();
        assert_eq!(spec.distribution, Some(VaultDistribution::Openbao));
        assert_eq!(spec.package, "openbao_2.7.2_linux_amd64.tar.gz");
        // Same playbook and URL as Vault's; only the names on the host differ.
        assert_eq!(spec.url, "https://10.0.0.5:8200");
        let server = &spec.vars["vault_server"];
        assert_eq!(server["mlock"], false);
        for (key, want) in [
            ("binary", "bao"),
            ("name", "openbao"),
            ("config_dir", "/etc/openbao"),
            ("data_dir", "/opt/openbao/data"),
            ("archive", "openbao.tar.gz"),
            ("unpack_module", "tarfile"),
        ] {
            assert_eq!(server[key], want, "{key}");
        }
    }

    #[test]
    fn a_missing_or_unknown_host_and_wrong_values_are_reported_with_their_path() {
        let errs = planned(&format!(
            "{HOSTS}components:\n  vault: {{ placement: host }}\n  gitlab: {{ placement: host, host: gitlab-9 }}\n"
        ))
        .unwrap_err();
        let got: Vec<(&str, bool)> = errs.iter().map(|d| (d.path.as_str(), d.hint.is_some())).collect();
        assert_eq!(got, [("components.vault", true), ("components.gitlab.host", true)]);
        assert!(
            errs[1].message.contains("unknown host `gitlab-9`"),
            "{}",
            errs[1].message
        );

        let errs = planned(&format!(
            "{HOSTS}components:\n  gitlab: {{ placement: host, host: gitlab-1, values: {{ registry: yes-please, gitlabRb: [1] }} }}\n"
        ))
        .unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            ["components.gitlab.values.registry", "components.gitlab.values.gitlabRb"]
        );
    }

    #[test]
    fn a_host_terraform_has_yet_to_create_is_planned_later_and_other_placements_not_here() {
        let steps = planned(
            "infrastructure:\n  modules:\n    - { name: cloud, source: ./tf, provides: [vault-9] }\ncomponents:\n  vault: { placement: host, host: vault-9 }\n  gitlab: { placement: external, external: { url: https://gitlab.example.com } }\n",
        )
        .unwrap();
        assert!(
            steps.is_empty(),
            "{:?}",
            steps.iter().map(|s| &s.id).collect::<Vec<_>>()
        );
    }

    #[test]
    fn an_airgap_bundle_without_the_package_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("checksums.sha256"), "").unwrap();
        let errs = planned(&format!(
            "artifacts: {{ mode: airgap, bundle: {} }}\n{HOSTS}components:\n  vault: {{ placement: host, host: vault-1 }}\n",
            dir.path().display()
        ))
        .unwrap_err();
        assert_eq!(errs[0].path, "components.vault.version");
        assert!(
            errs[0].message.contains("vault/1.10.4/vault_1.10.4_linux_amd64.zip"),
            "{}",
            errs[0].message
        );
    }
}
