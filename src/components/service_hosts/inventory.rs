//! The one-host Ansible inventory a service-host run connects through: the
//! same address, port, user, key, bastions and host-key checking as our own
//! SSH connections, and `become` only when the user is not root.

use serde_json::{json, Map};

use super::url_host;
use crate::steps::hosts::HostConn;
use crate::steps::remote;

/// The one-host Ansible inventory for `host`, verifying its key against
/// `known_hosts` exactly as our own SSH connections do.
pub fn render_inventory(host: &HostConn, known_hosts: &str) -> Result<String, String> {
    let q = remote::sh_quote;
    let mut ssh_args = Vec::new();
    if let Some(cfg) = &host.config_file {
        ssh_args.push(format!("-F {}", q(&cfg.display().to_string())));
    }
    ssh_args.push(format!("-o UserKnownHostsFile={}", q(known_hosts)));
    ssh_args.push("-o StrictHostKeyChecking=yes".to_string());
    let mut jumps = Vec::new();
    let mut b = host.bastion.as_deref();
    while let Some(j) = b {
        jumps.insert(0, format!("{}@{}:{}", j.user, url_host(&j.address), j.port));
        b = j.bastion.as_deref();
    }
    if !jumps.is_empty() {
        ssh_args.push(format!("-o ProxyJump={}", jumps.join(",")));
    }
    let mut vars = Map::new();
    vars.insert("ansible_host".into(), json!(host.address));
    vars.insert("ansible_port".into(), json!(host.port));
    vars.insert("ansible_user".into(), json!(host.user));
    if let Some(key) = &host.identity_file {
        vars.insert("ansible_ssh_private_key_file".into(), json!(key.display().to_string()));
    }
    if host.user != "root" {
        vars.insert("ansible_become".into(), json!(true));
    }
    vars.insert("ansible_ssh_common_args".into(), json!(ssh_args.join(" ")));
    // One SSH round trip per task instead of several.
    vars.insert("ansible_pipelining".into(), json!(true));
    vars.insert("ansible_python_interpreter".into(), json!("auto_silent"));
    let inventory = json!({ "all": { "hosts": { host.name.clone(): vars } } });
    let yaml = serde_yaml::to_string(&inventory).map_err(|e| e.to_string())?;
    Ok(format!(
        "# One-host inventory for {}, written by nautes-install.\n{yaml}",
        host.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::SudoMode;

    #[test]
    fn the_inventory_verifies_host_keys_and_becomes_root_only_when_needed() {
        let host = HostConn {
            name: "vault-1".into(),
            address: "fd00::5".into(),
            internal_address: "fd00::5".into(),
            port: 2222,
            user: "ubuntu".into(),
            identity_file: Some("/keys/id".into()),
            sudo: SudoMode::Passwordless,
            sudo_password: None,
            bastion: Some(Box::new(HostConn {
                name: "bastion".into(),
                address: "192.0.2.1".into(),
                internal_address: "192.0.2.1".into(),
                port: 22,
                user: "jump".into(),
                identity_file: None,
                sudo: SudoMode::None,
                sudo_password: None,
                bastion: None,
                config_file: None,
            })),
            config_file: None,
        };
        let text = render_inventory(&host, "/w/known hosts").unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let h = &v["all"]["hosts"]["vault-1"];
        assert_eq!(h["ansible_host"].as_str(), Some("fd00::5"));
        assert_eq!(h["ansible_port"].as_u64(), Some(2222));
        assert_eq!(h["ansible_become"].as_bool(), Some(true));
        let args = h["ansible_ssh_common_args"].as_str().unwrap();
        assert!(
            args.contains("-o UserKnownHostsFile='/w/known hosts' -o StrictHostKeyChecking=yes"),
            "{args}"
        );
        assert!(args.contains("-o ProxyJump=jump@192.0.2.1:22"), "{args}");
        assert_eq!(url_host("fd00::5"), "[fd00::5]");
    }
}
