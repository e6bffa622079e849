//! nautes-install: reads one inventory, plans a DAG of steps, and runs them
//! resumably against hosts, Terraform, Ansible and Kubernetes.

pub mod archive;
pub mod artifacts;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod components;
pub mod drivers;
pub mod engine;
pub mod exit;
pub mod inventory;
pub mod pki;
pub mod plan;
pub mod secret;
pub mod state;
pub mod steps;
pub mod templates;
pub mod util;
pub mod versions;
pub mod wait;

/// mimalloc instead of glibc's allocator, for every binary linking this
/// crate (the CLI, its tests and benches): planning makes and drops many
/// small JSON values, and glibc's malloc/free were about 45 % of the
/// 10 000-tenant validate + plan profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
