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
