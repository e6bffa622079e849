//! How to reach an inventory host: its own fields over the `ssh` defaults,
//! with paths made absolute so a step recorded in the state can still reach
//! the host from any working directory (teardown months later).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::inventory::{Host, Loaded, SecretRef, SudoMode};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostConn {
    pub name: String,
    pub address: String,
    /// What other nodes use to reach this host (node-ip).
    pub internal_address: String,
    pub port: u16,
    pub user: String,
    pub identity_file: Option<PathBuf>,
    pub sudo: SudoMode,
    pub sudo_password: Option<SecretRef>,
    pub bastion: Option<Box<HostConn>>,
    pub config_file: Option<PathBuf>,
}

pub fn find<'a>(loaded: &'a Loaded, name: &str) -> Option<&'a Host> {
    loaded.inventory.hosts.iter().find(|h| h.name == name)
}

/// Connection details of host `name`; None when no such host is defined
/// (validation reports that with a position).
pub fn connection(loaded: &Loaded, name: &str) -> Option<HostConn> {
    connection_depth(loaded, name, 0)
}

fn connection_depth(loaded: &Loaded, name: &str, depth: usize) -> Option<HostConn> {
    let host = find(loaded, name)?;
    let ssh = &loaded.inventory.ssh;
    let abs = |p: &PathBuf| std::path::absolute(loaded.resolve(p)).unwrap_or_else(|_| loaded.resolve(p));
    let secret = |s: &SecretRef| SecretRef {
        env: s.env.clone(),
        file: s.file.as_ref().map(abs),
    };
    let bastion_name = host
        .bastion
        .as_ref()
        .or(ssh.bastion.as_ref())
        .filter(|b| *b != &host.name);
    // Validation rejects bastion loops; the depth bound keeps a bad file from recursing forever.
    let bastion = match bastion_name {
        Some(b) if depth < 8 => connection_depth(loaded, b, depth + 1).map(Box::new),
        _ => None,
    };
    Some(HostConn {
        name: host.name.clone(),
        address: host.address.clone(),
        internal_address: host.internal_address.clone().unwrap_or_else(|| host.address.clone()),
        port: host.port.or(ssh.port).unwrap_or(22),
        user: host
            .user
            .clone()
            .or_else(|| ssh.user.clone())
            .unwrap_or_else(|| "root".to_string()),
        identity_file: host.identity_file.as_ref().or(ssh.identity_file.as_ref()).map(abs),
        sudo: host.sudo.or(ssh.sudo).unwrap_or(SudoMode::None),
        sudo_password: host.sudo_password.as_ref().or(ssh.sudo_password.as_ref()).map(secret),
        bastion,
        config_file: ssh.config_file.as_ref().map(abs),
    })
}
