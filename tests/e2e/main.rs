//! The end-to-end tier: the installer against real tools where they can be
//! had — a real kube-apiserver on real etcd, real OpenBao, real sshd hosts,
//! real Terraform and Ansible — and stand-ins (`tests/support`) where they
//! cannot. One binary, so the support code is built once and its tests run
//! in parallel with each other; each test leases its own ports, addresses
//! and directories. Each module is one area; `cargo test --test e2e stack::`
//! runs one. A test whose tool is missing says so and passes outside CI and
//! fails in CI (see `tests/support/controlplane.rs`).

#[path = "../support/mod.rs"]
mod support;

mod argocd_rbac;
mod backup;
mod drift;
mod gitlab;
mod gitlab_backup;
mod gitlab_crash;
mod gitlab_standin;
mod k3s;
mod kube_apply;
mod kube_components;
mod kubespray;
mod platform_crash;
mod registries;
mod registries_install;
mod service_hosts;
mod sign_in;
mod sign_in_registries;
mod ssh_driver;
mod stack;
mod state_backend;
mod tenant_resources;
mod tenant_sign_in;
mod terraform;
mod vault;
mod vault_kubernetes;
mod vault_oidc;
