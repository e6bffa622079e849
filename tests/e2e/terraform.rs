//! Terraform through the real binary with the real `terraform` (1.0.3) and
//! null provider from an offline filesystem mirror (`.ci/run` installs both).

use crate::support::{cli, controlplane, hosts};

use std::path::{Path, PathBuf};
use std::time::Duration;

use cli::{code, stderr, stdout, wait_for, Scratch};

/// (terraform binary, provider mirror) or None to skip (outside CI).
fn tools() -> Option<(PathBuf, PathBuf)> {
    let mirror = std::env::var_os("NAUTES_TF_MIRROR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/opt/nautes-ci/terraform-mirror".into());
    let binary = [
        "/opt/nautes-ci/bin/terraform",
        "/usr/local/bin/terraform",
        "/usr/bin/terraform",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file());
    match (binary, mirror.is_dir()) {
        (Some(b), true) => Some((b, mirror)),
        _ if std::env::var_os("CI").is_some() => {
            panic!("terraform or its provider mirror is missing (.ci/install.d/30-terraform.sh installs them)")
        }
        _ => {
            eprintln!("SKIPPED: terraform or /opt/nautes-ci/terraform-mirror missing");
            None
        }
    }
}

fn module() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/terraform/null-hosts")
}

/// An inventory with one Terraform module; `vars` is the module's variables as YAML flow.
fn inventory(s: &Scratch, tf: &(PathBuf, PathBuf), vars: &str, extra: &str) {
    std::fs::write(
        s.path().join("terraform.rc"),
        format!(
            "provider_installation {{\n  filesystem_mirror {{\n    path = \"{}\"\n  }}\n}}\n",
            tf.1.display()
        ),
    )
    .unwrap();
    s.write_inventory(&format!(
        "infrastructure:\n  terraform:\n    binary: {}\n    cliConfig: terraform.rc\n  modules:\n    - name: cloud\n      source: {}\n      variables: {vars}\n      secretVariables:\n        api_token: {{ env: NAUTES_TEST_TF_TOKEN }}\n      provides: [cloud-1]\n{extra}",
        tf.0.display(),
        module().display()
    ));
}

fn hosts_var(hosts: &[(&str, &str)]) -> String {
    let list: Vec<String> = hosts
        .iter()
        .map(|(n, a)| format!("{{name: {n}, address: \"{a}\"}}"))
        .collect();
    format!("[{}]", list.join(", "))
}

const SECRET: &str = "tf-secret-value-8d1f";

fn run(s: &Scratch, args: &[&str]) -> std::process::Output {
    s.command(args).env("NAUTES_TEST_TF_TOKEN", SECRET).output().unwrap()
}

#[test]
fn apply_outputs_hosts_rerun_is_noop_variable_change_replans_destroy_cleans_up() {
    let Some(tf) = tools() else { return };
    let s = Scratch::new();
    inventory(
        &s,
        &tf,
        &format!("{{hosts: {}}}", hosts_var(&[("cloud-1", "127.0.0.1")])),
        "",
    );
    let out = run(&s, &["--yes", "apply", "-i", "inventory.yaml"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let outputs = s.state()["steps"]["terraform/cloud"]["outputs"].clone();
    assert_eq!(outputs["hosts"][0]["name"], "cloud-1");
    assert_eq!(outputs["hosts"][0]["address"], "127.0.0.1");
    assert_eq!(
        outputs["hosts"][0]["labels"]["has_token"], "yes",
        "the secret variable reached Terraform"
    );
    assert_eq!(outputs["plan"]["add"], 1);

    // The secret is in the 0600 tfvars Terraform reads, and nowhere we write.
    let tfvars = s.workdir().join("terraform/cloud/nautes.auto.tfvars.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&tfvars).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!s.read(".nautes/state.json").contains(SECRET));
    for log in std::fs::read_dir(s.workdir().join("logs")).unwrap() {
        assert!(
            !std::fs::read_to_string(log.unwrap().path()).unwrap().contains(SECRET),
            "secret in a run log"
        );
    }
    assert!(!stderr(&out).contains(SECRET) && !stdout(&out).contains(SECRET));

    let again = run(&s, &["--yes", "apply", "-i", "inventory.yaml"]);
    assert_eq!(code(&again), 0);
    assert!(stderr(&again).contains(": 0 done, "), "{}", stderr(&again));

    // A new host: the step's inputs change and Terraform plans one addition.
    inventory(
        &s,
        &tf,
        &format!(
            "{{hosts: {}}}",
            hosts_var(&[("cloud-1", "127.0.0.1"), ("cloud-2", "127.0.0.2")])
        ),
        "",
    );
    let plan = stdout(&run(&s, &["plan", "-i", "inventory.yaml"]));
    assert!(plan.contains("~ terraform/cloud  inputs changed"), "{plan}");
    assert!(
        plan.contains("Terraform: 1 to add, 0 to change, 0 to destroy"),
        "Terraform's own plan is shown: {plan}"
    );
    let render = run(&s, &["render", "-i", "inventory.yaml", "--out", "review"]);
    assert_eq!(code(&render), 0, "{}", stderr(&render));
    let tfvars = s.read("review/terraform/cloud/nautes.auto.tfvars.json");
    assert!(
        tfvars.contains("<secret from env NAUTES_TEST_TF_TOKEN>") && !tfvars.contains(SECRET),
        "{tfvars}"
    );
    assert!(tfvars.contains("127.0.0.2"), "{tfvars}");
    assert_eq!(code(&run(&s, &["--yes", "apply", "-i", "inventory.yaml"])), 0);
    let outputs = s.state()["steps"]["terraform/cloud"]["outputs"].clone();
    assert_eq!(outputs["plan"]["add"], 1, "only the new host is created: {outputs}");
    assert_eq!(outputs["hosts"].as_array().unwrap().len(), 2);

    let out = run(&s, &["--yes", "destroy", "-i", "inventory.yaml"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let tfstate = std::fs::read_to_string(s.workdir().join("terraform/cloud/terraform.tfstate")).unwrap();
    let tfstate: serde_json::Value = serde_json::from_str(&tfstate).unwrap();
    assert_eq!(
        tfstate["resources"],
        serde_json::json!([]),
        "Terraform destroyed everything"
    );
}

#[test]
fn a_failing_module_names_the_resource_and_terraform_message() {
    let Some(tf) = tools() else { return };
    let s = Scratch::new();
    inventory(
        &s,
        &tf,
        &format!("{{hosts: {}, fail: true}}", hosts_var(&[("cloud-1", "127.0.0.1")])),
        "",
    );
    let out = run(&s, &["--yes", "apply", "-i", "inventory.yaml"]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(err.contains("null_resource.quota[0]"), "names the resource: {err}");
    assert!(
        err.contains("quota exceeded for instance type"),
        "carries Terraform's message: {err}"
    );
    assert_eq!(s.step_status("terraform/cloud").as_deref(), Some("failed"));
}

#[test]
fn a_module_without_the_promised_host_is_an_error() {
    let Some(tf) = tools() else { return };
    let s = Scratch::new();
    inventory(
        &s,
        &tf,
        &format!("{{hosts: {}}}", hosts_var(&[("other", "127.0.0.1")])),
        "",
    );
    let out = run(&s, &["--yes", "apply", "-i", "inventory.yaml"]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("did not output hosts listed in `provides`: cloud-1 (it output: other)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_interrupted_apply_resumes() {
    let Some(tf) = tools() else { return };
    let s = Scratch::new();
    inventory(
        &s,
        &tf,
        &format!(
            "{{hosts: {}, sleep_seconds: 30}}",
            hosts_var(&[("cloud-1", "127.0.0.1")])
        ),
        "",
    );
    let mut cmd = s.command(&["--yes", "apply", "-i", "inventory.yaml"]);
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .env("NAUTES_TEST_TF_TOKEN", SECRET)
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill the whole process group (Terraform too) once creation is under way.
    wait_for("terraform to start creating", Duration::from_secs(60), || {
        std::fs::read_dir(s.workdir().join("logs"))
            .map(|d| {
                d.flatten().any(|f| {
                    std::fs::read_to_string(f.path())
                        .unwrap_or_default()
                        .contains("Creating...")
                })
            })
            .unwrap_or(false)
    });
    // SAFETY: kill(2) on the process group we created.
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
    let _ = child.wait();
    assert_eq!(s.step_status("terraform/cloud").as_deref(), Some("running"));
    inventory(
        &s,
        &tf,
        &format!("{{hosts: {}}}", hosts_var(&[("cloud-1", "127.0.0.1")])),
        "",
    );
    let out = run(&s, &["--yes", "apply", "-i", "inventory.yaml"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        s.state()["steps"]["terraform/cloud"]["outputs"]["hosts"][0]["name"],
        "cloud-1"
    );
}

#[test]
fn hybrid_terraform_hosts_and_bare_metal_form_one_k3s_cluster() {
    let Some(tf) = tools() else { return };
    if hosts::skip_unless_available() || controlplane::skip_unless_available() {
        return;
    }
    let hosts = hosts::TestHosts::start_named(&[
        ("cloud-1".into(), "cloud-1".into()),
        ("metal-1".into(), "metal-1".into()),
    ]);
    let api = controlplane::ControlPlane::start_with_nodes(&[]);
    for i in 0..2 {
        std::fs::write(hosts.host_path(i, "/etc/rancher/standin-api.env"), api.env_file()).unwrap();
    }
    let s = Scratch::new();
    std::fs::write(s.path().join("known_hosts"), hosts.known_hosts()).unwrap();
    // The K3s bundle, built as tests/e2e/k3s.rs does.
    let bundle = s.path().join("bundle");
    let d = bundle.join("k3s/v1.27.4+k3s1");
    std::fs::create_dir_all(&d).unwrap();
    let standin = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/k3s_standin");
    std::fs::write(
        d.join("k3s"),
        std::fs::read_to_string(standin.join("k3s"))
            .unwrap()
            .replace("@VERSION@", "v1.27.4+k3s1"),
    )
    .unwrap();
    std::fs::copy(standin.join("install.sh"), d.join("install.sh")).unwrap();
    std::fs::write(d.join("k3s-airgap-images-amd64.tar.zst"), b"images").unwrap();
    nautes_install::artifacts::write_checksums(&bundle).unwrap();
    let cloud = &hosts.hosts[0];
    let metal = &hosts.hosts[1];
    let extra = format!(
        "ssh:\n  identityFile: {}\n  knownHosts: known_hosts\nartifacts:\n  mode: airgap\n  bundle: bundle\nhosts:\n  - name: metal-1\n    address: {}\n    port: {}\n    waive: [systemd]\nclusters:\n  - name: hybrid\n    type: k3s\n    k3s:\n      version: v1.27.4+k3s1\n      servers: [cloud-1]\n      agents: [metal-1]\n      apiEndpoint: {}\n",
        hosts.client_key().display(),
        metal.address,
        hosts::PORT,
        api.url()
    );
    inventory(
        &s,
        &tf,
        &format!(
            "{{hosts: {}, port: {}}}",
            hosts_var(&[("cloud-1", &cloud.address)]),
            hosts::PORT
        ),
        &extra,
    );
    // Before Terraform runs, the plan has the module but cannot place cloud-1 yet.
    let plan = stdout(&run(&s, &["plan", "-i", "inventory.yaml"]));
    assert!(plan.contains("+ terraform/cloud"), "{plan}");
    assert!(plan.contains("note: cloud-1 come from terraform/cloud"), "{plan}");
    // Without a waiver the Terraform host fails preflight (test hosts run no systemd):
    // proof that it was planned and checked after Terraform made it.
    let out = run(&s, &["--yes", "apply", "-i", "inventory.yaml"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("cloud-1  systemd   FAIL"), "{}", stderr(&out));
    assert_eq!(s.step_status("terraform/cloud").as_deref(), Some("done"));

    let with_waiver = std::fs::read_to_string(s.inventory()).unwrap().replace(
        "      provides: [cloud-1]\n",
        "      provides: [cloud-1]\n      hostDefaults: { waive: [systemd] }\n",
    );
    std::fs::write(s.inventory(), with_waiver).unwrap();
    let out = run(&s, &["--yes", "apply", "-i", "inventory.yaml"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mut nodes = api.node_names();
    nodes.sort();
    assert_eq!(nodes, ["cloud-1", "metal-1"]);
    let config = std::fs::read_to_string(hosts.host_path(0, "/etc/rancher/k3s/config.yaml")).unwrap();
    assert!(config.contains("node-name: cloud-1"), "{config}");

    // Teardown: the cluster first, then the Terraform hosts it ran on.
    let order = run(&s, &["--output", "json", "plan", "-i", "inventory.yaml", "--destroy"]);
    let order: serde_json::Value = serde_json::from_slice(&order.stdout).unwrap();
    let ids: Vec<&str> = order["destroy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let pos = |id: &str| {
        ids.iter()
            .position(|x| *x == id)
            .unwrap_or_else(|| panic!("{id} not in {ids:?}"))
    };
    assert!(pos("k3s/hybrid/server/cloud-1") < pos("terraform/cloud"), "{ids:?}");
    let out = run(&s, &["--yes", "destroy", "-i", "inventory.yaml"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        std::fs::read_to_string(hosts.host_path(0, "/usr/local/bin/k3s")).is_err(),
        "K3s removed from cloud-1"
    );
}

#[test]
fn shipped_modules_are_canonically_formatted_and_validate_where_the_provider_exists() {
    let Some(tf) = tools() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["terraform/modules/alicloud-ecs", "tests/terraform/null-hosts"] {
        let out = std::process::Command::new(&tf.0)
            .args(["fmt", "-check", "-recursive", "-diff"])
            .current_dir(root.join(dir))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{dir} is not `terraform fmt` clean:\n{}",
            stdout(&out)
        );
    }
    // Validation needs the provider; this mirror only has null, so the cloud module
    // is validated wherever a mirror with aliyun/alicloud is configured.
    let alicloud = tf.1.join("registry.terraform.io/aliyun/alicloud");
    if !alicloud.is_dir() {
        eprintln!(
            "note: aliyun/alicloud not in {}; `terraform validate` of alicloud-ecs skipped",
            tf.1.display()
        );
        return;
    }
    let work = tempfile::tempdir().unwrap();
    for f in ["main.tf", "variables.tf", "outputs.tf"] {
        std::fs::copy(root.join("terraform/modules/alicloud-ecs").join(f), work.path().join(f)).unwrap();
    }
    let rc = work.path().join("rc");
    std::fs::write(
        &rc,
        format!(
            "provider_installation {{\n filesystem_mirror {{\n path = \"{}\"\n }}\n}}\n",
            tf.1.display()
        ),
    )
    .unwrap();
    for args in [&["init", "-input=false"][..], &["validate"][..]] {
        let out = std::process::Command::new(&tf.0)
            .args(args)
            .env("TF_CLI_CONFIG_FILE", &rc)
            .current_dir(work.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "terraform {args:?}: {}", stderr(&out));
    }
}
