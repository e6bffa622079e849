//! `validate` on broken inventories: every problem reported at once, each
//! with file:line:col, field path and hint (golden output), exit code 3.
//! Set NAUTES_BLESS=1 to rewrite the golden files after an intended change.

use crate::support::cli;

use std::path::Path;
use std::process::Command;

use cli::{code, stderr, stdout, Scratch};

fn validate_fixture(name: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nautes-install"))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid"))
        .args(["validate", "-i", &format!("{name}.yaml")])
        .output()
        .expect("run validate")
}

fn check_golden(name: &str) {
    let out = validate_fixture(name);
    assert_eq!(code(&out), 3, "invalid inventory exits 3");
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/invalid/{name}.stderr"));
    let actual = stderr(&out);
    assert!(!actual.contains("panicked"), "{actual}");
    if std::env::var_os("NAUTES_BLESS").is_some() {
        std::fs::write(&golden, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_else(|_| panic!("missing golden {}", golden.display()));
    assert_eq!(
        actual, expected,
        "output of `validate -i {name}.yaml` changed (NAUTES_BLESS=1 to accept)"
    );
}

#[test]
fn structural_errors_are_all_reported_with_positions() {
    check_golden("structural");
}

#[test]
fn semantic_errors_are_all_reported_with_positions() {
    check_golden("semantic");
}

#[test]
fn platform_values_are_checked_with_positions() {
    check_golden("platform");
}

/// Tenant groups need an identity source (Dex) and one role each; a role
/// the installer lacks is named where it stands.
#[test]
fn tenant_groups_without_dex_twice_or_with_an_unknown_role_are_errors_with_positions() {
    check_golden("tenant_groups");
    check_golden("tenant_role");
}

/// Two tenants claiming one Harbor project or Nexus repository, a tenant
/// naming a Harbor instance nobody declared or another tenant's own, and
/// SonarQube asked for without SonarQube: errors at what they name.
#[test]
fn registry_resources_claimed_twice_or_on_unknown_instances_are_errors_with_positions() {
    check_golden("registries");
}

/// What a tenant owns is claimed once: two tenants on one GitLab group
/// (case-insensitive, as GitLab's paths) or one Harbor instance, a tenant
/// on the platform's own group, on the shared Harbor's name or on a path
/// GitLab reserves, and a Harbor instance nobody declared — each an error
/// naming both claimants, with the line and column of the first.
#[test]
fn tenant_resources_claimed_twice_or_unknown_are_errors_naming_both_with_positions() {
    check_golden("tenant_resources");
}

/// Harbor, Nexus and SonarQube installed in a cluster need Traefik (their
/// Ingresses are its) — said where their placement is, or where they are
/// listed when it is the default — and none goes on a host.
#[test]
fn registries_installed_without_an_ingress_or_on_a_host_are_errors_with_positions() {
    check_golden("registries_install");
}

/// A tenant's own Dex clients: Dex must be installed, names are DNS
/// labels (the client id is `<tenant>.<name>`), a name is declared once
/// (the second names the first's line), callbacks are http(s) URLs.
#[test]
fn tenant_dex_clients_are_checked_at_their_positions() {
    check_golden("tenant_dex_clients");
}

#[test]
fn syntax_error_has_a_position() {
    check_golden("syntax");
}

#[test]
fn empty_file_has_a_hint() {
    check_golden("empty");
}

#[test]
fn json_output_lists_every_diagnostic_with_line_and_column() {
    let out = Command::new(env!("CARGO_BIN_EXE_nautes-install"))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid"))
        .args(["--output", "json", "validate", "-i", "semantic.yaml"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 3);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("one JSON document");
    let diags = v["diagnostics"].as_array().unwrap();
    assert_eq!(v["errors"], diags.len());
    let dup = diags
        .iter()
        .find(|d| d["path"] == "hosts[1].name")
        .expect("duplicate host reported");
    assert_eq!((dup["line"].as_u64(), dup["column"].as_u64()), (Some(10), Some(11)));
    assert!(dup["hint"].as_str().unwrap().contains("hosts[0].name"));
}

#[test]
fn the_starter_inventory_is_valid() {
    let s = Scratch::new();
    let init = s.command(&["init"]).output().unwrap();
    assert_eq!(code(&init), 0);
    std::fs::write(s.inventory(), &init.stdout).unwrap();
    let out = s.run("validate", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn hook_targets_that_match_nothing_are_errors_with_positions() {
    let s = Scratch::new();
    s.write_inventory("hooks:\n  - name: a\n    run: 'true'\n    after: [k3s/*]\n");
    let out = s.run("validate", &[]);
    assert_eq!(code(&out), 3);
    let err = stderr(&out);
    assert!(err.contains("`k3s/*` matches no step"), "{err}");
    assert!(err.contains("inventory.yaml:8:13"), "{err}");
}

#[test]
fn hook_cycles_are_named() {
    let s = Scratch::new();
    s.write_inventory(
        "hooks:\n  - name: a\n    run: 'true'\n    after: [hook/b]\n  - name: b\n    run: 'true'\n    after: [hook/a]\n",
    );
    let out = s.run("validate", &[]);
    assert_eq!(code(&out), 5);
    let err = stderr(&out);
    assert!(
        err.contains("hook/a -> hook/b -> hook/a") || err.contains("hook/b -> hook/a -> hook/b"),
        "{err}"
    );
}

#[test]
fn secret_files_readable_by_others_are_refused() {
    let s = Scratch::new();
    let key = s.path().join("id_test");
    std::fs::write(&key, "not really a key").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    s.write_inventory("ssh:\n  identityFile: id_test\n");
    let out = s.run("validate", &[]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(code(&s.run("validate", &[])), 0);
}

#[test]
fn schema_is_json_schema_of_the_inventory() {
    let s = Scratch::new();
    let out = s.command(&["schema"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["title"], "Inventory");
    let required: Vec<&str> = v["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x.as_str())
        .collect();
    assert!(
        required.contains(&"apiVersion") && required.contains(&"metadata"),
        "{required:?}"
    );
    assert!(v["properties"]["hosts"].is_object());
    assert_eq!(
        v["additionalProperties"], false,
        "unknown fields are errors in the schema too"
    );
}

#[test]
fn the_schema_lists_the_catalogs_components_and_no_other() {
    let s = Scratch::new();
    let out = s.command(&["schema"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The components are the catalog's keys, each described, and no other.
    let components = &v["$defs"]["Components"];
    assert_eq!(components["additionalProperties"], false, "{components}");
    for key in ["certManager", "traefik", "dex", "argocd", "tekton", "nautes"] {
        let c = &components["properties"][key];
        assert!(c["description"].as_str().is_some_and(|d| !d.is_empty()), "{key}: {c}");
        assert_eq!(c["anyOf"][0]["$ref"], "#/$defs/Component", "{key}: {c}");
    }
}

#[test]
fn what_apply_would_fail_on_is_reported_beside_shape_errors() {
    check_golden("first_contact");
}

#[test]
fn a_byte_order_mark_is_accepted_and_stdin_is_read_with_dash() {
    let s = Scratch::new();
    let body = format!("\u{feff}{}", cli::HEADER);
    std::fs::write(s.inventory(), &body).unwrap();
    let out = s.run("validate", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    use std::io::Write;
    let mut child = s
        .command(&["validate", "-i", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("<stdin>: valid"), "{}", stderr(&out));
}

#[test]
fn a_tab_and_a_duplicate_key_are_reported_where_they_are() {
    let s = Scratch::new();
    s.write_inventory("hosts:\n  - name: a\n    address: 10.0.0.1\n\troles: [x]\n");
    let err = stderr(&s.run("validate", &[]));
    assert!(err.contains("inventory.yaml:8:1"), "the tab's line: {err}");
    assert!(err.contains("indent with spaces"), "{err}");
    s.write_inventory("hosts:\n  - name: a\n    address: 10.0.0.1\n    name: b\n");
    let err = stderr(&s.run("validate", &[]));
    assert!(err.contains("inventory.yaml:8:5"), "the second key's line: {err}");
    assert!(err.contains("`name` appears twice"), "{err}");
}

/// The shared builder's paths, lists and hooks land where the inventory
/// reads them: the binary validates and plans what it writes.
#[test]
fn the_inventory_builder_writes_what_the_installer_reads() {
    use crate::support::inventory::InventoryBuilder;
    use serde_json::json;
    let s = Scratch::new();
    let built = InventoryBuilder::new()
        .domain("example.com")
        .set("settings.timeouts.sshConnect", "2s")
        .host("a", "10.0.0.1", json!({"port": 2222}))
        // Listed before the hook it runs after: only `after` puts it second.
        .hook("two", "echo hi", &["one"], Some("true"))
        .hook("one", "true", &[], None);
    s.write(&built);
    let out = s.run("validate", &[]);
    assert_eq!(code(&out), 0, "{}\n{}", stderr(&out), built.yaml());
    let plan = s
        .command(&["--output", "json", "plan", "-v", "-i", "inventory.yaml"])
        .output()
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let ids: Vec<&str> = plan["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["id"].as_str())
        .filter(|id| id.starts_with("hook/"))
        .collect();
    // `after: [hook/one]` orders two after one.
    assert_eq!(ids, ["hook/one", "hook/two"], "{plan}");
    let doc: serde_json::Value = serde_yaml::from_str(&built.yaml()).unwrap();
    assert_eq!(doc["hooks"][0]["after"], json!(["hook/one"]));
    assert_eq!(doc["hosts"][0]["port"], 2222);
}
